"""Where data lives: the shard map, routing, IDs, pools and migrations.

    national ID number --hash--> logical shard (0..4095) --shard map--> physical database
    64-bit ID ----------bits---> logical shard  ---------------------^

`sharding` never imports `engine`.
"""
