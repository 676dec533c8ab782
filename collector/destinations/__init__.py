"""Where archives and the report go, besides a local folder (`collector.destinations.local`).

`parse_destination` turns `-o` into a location; `S3Location.open()` gives the
`collector.destinations.s3.S3Destination` for object storage. Importing this package does
not import aiobotocore.
"""

from collector.destinations.location import LocalLocation, S3Location, parse_destination

__all__ = ["LocalLocation", "S3Location", "parse_destination"]
