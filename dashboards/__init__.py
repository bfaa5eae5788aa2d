"""mimamori.dashboards"""
