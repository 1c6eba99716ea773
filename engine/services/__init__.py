"""The lending services: what each channel request does to a customer's shard."""
