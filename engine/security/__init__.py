"""Protecting people and the channel's word: PII encryption and masking, checks of
ID numbers, phones and cards, and the HMAC signature of a request. No I/O."""
