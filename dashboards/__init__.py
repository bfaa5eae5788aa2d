"""mimamori.dashboards: Grafana dashboards as code for the SOC, and their provisioning.

Modules, from the store outwards:

- :mod:`.query`      the PostgreSQL data source (uid ``mimamori-store``) and raw-SQL targets
- :mod:`.flowsql`    flow SQL that reads the raw table or a rollup by the dashboard range
- :mod:`.panels`     panel and variable constructors, bilingual texts (:class:`~.panels.Tr`)
- :mod:`.variables`  the shared template variables (tenant, gateway, mac, severity)
- :mod:`.fleet`, :mod:`.alerts`, :mod:`.site`, :mod:`.device`, :mod:`.platform`  dashboards
- :mod:`.columns`    display names of table columns in both languages
- :mod:`.build`      JSON and provisioning files (``mimamori dashboards build``)
- :mod:`.push`       upload through Grafana's API (``mimamori dashboards push``)
- :mod:`.macros`     Grafana's macro and variable expansion, for running panels without it
- :mod:`.runner`     run every panel of a built dashboard against a store (tests, bench)

Dashboards depend only on the store's relation and column names (docs/schema.md).
"""
