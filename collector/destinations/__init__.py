"""Where archives and the report go: the protocols (`base.py`), a local folder (`local.py`),
object storage (`s3.py`), and `-o` parsed into one of them (`location.py`). Imports config/
and below; never clouddc/. Importing this package does not import aiobotocore."""

from collector.destinations.location import LocalLocation, S3Location, parse_destination

__all__ = ["LocalLocation", "S3Location", "parse_destination"]
