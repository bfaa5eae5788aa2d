"""mimamori.simulators"""
