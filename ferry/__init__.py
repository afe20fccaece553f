"""The ferry command line: one thin typer app over the bundler and importer libraries."""
