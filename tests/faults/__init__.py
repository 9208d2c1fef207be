"""Fault injection: `ssorl` commands SIGKILLed at random or injected points and run again,
and every JSON file the product writes corrupted, each checked against an uninterrupted run
or for a named error (tests/data/test_integrity.py covers the corrupted chunks)."""
