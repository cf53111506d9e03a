"""inferwatch's detection core: numpy and scipy in, frozen dataclasses out.

No I/O, no Kafka, no metrics, no globals; every detector updates on a batch of events.
"""
