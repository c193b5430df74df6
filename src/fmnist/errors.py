"""Project exceptions.

Every mistake a user can make (a wrong path, a bad file, an unknown name) raises a
subclass of :class:`FmnistError` whose message names the input, what was wrong and
how to fix it. The CLI prints that message on one line and exits with code 2.
"""

from __future__ import annotations


class FmnistError(Exception):
    """A user-facing error: the message is the whole story, no traceback needed."""


class DataError(FmnistError):
    """Dataset files missing, corrupt, of the wrong shape or failing their checksum."""


class ConfigError(FmnistError):
    """An unknown name, an out-of-range value or an inconsistent combination of options."""


class ModelFileError(FmnistError):
    """A model or checkpoint file that cannot be read or is not an fmnist file."""


class ImageError(FmnistError):
    """An input image that cannot be decoded, is empty, or is too large."""


class ImageTooLargeError(ImageError):
    """An image over the byte or pixel limit (a decompression bomb included): HTTP 413."""


class UnsupportedImageError(ImageError):
    """Not an image, or a format / pixel mode we do not decode: HTTP 415."""


class CorruptImageError(ImageError):
    """An empty, truncated or otherwise corrupt image file: HTTP 400."""


class OutputPathError(FmnistError):
    """An output path that cannot be written, or that would overwrite a user's file."""
