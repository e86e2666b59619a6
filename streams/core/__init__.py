"""The sans-I/O core: plain Python over plain (Avro-decoded) dict records. No Kafka, Postgres, asyncio or
wall clock in here; the Faust agents, the replay runner and the tests all drive the same code."""
