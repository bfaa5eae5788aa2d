"""mimamori.edge"""
