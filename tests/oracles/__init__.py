"""Reference implementations the library is checked against (test oracles, not library code)."""
