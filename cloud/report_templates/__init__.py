"""Texts and layout of the customer reports (monthly report, incident evidence).

``catalogue`` maps alert categories to IPA's guidance and holds the bilingual wording;
``render`` turns the collected figures into HTML (the PDF is printed from the same HTML).
"""
