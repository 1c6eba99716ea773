"""From application to signed contract: identity and list checks, rule sets and
their decisions, the credit-bureau step, contracts and their evidence hash chain."""
