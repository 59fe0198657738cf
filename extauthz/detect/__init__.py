"""Sensitive-data and hidden-instruction detection, shared by the inventory (what it shows) and
enforcement (the quarantine screen): vocabulary, values, capability, responses, hidden, phrases,
and `assess.Assessor`, which judges one published entry. See docs/detection.md."""
