"""mimamori.cloud"""
