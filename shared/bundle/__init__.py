"""The ferry bundle: format, writer, reader."""
