"""The channel API as data: the wire messages (msgspec Structs), the RFC 9457
problem types, and the JSON codec. Imports nothing of the engine but itself."""
