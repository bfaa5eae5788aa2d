"""mimamori.detect"""
