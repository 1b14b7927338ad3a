"""The database connector (BILLERS.md section 2): a biller's own PostgreSQL or
MariaDB/MySQL database, behind the same Biller port as the REST connector.

``sql`` translates named parameters, ``queries`` holds the statements and the
shipped SQL, ``dsn`` checks connection strings, ``engine`` is what a driver must
provide (``pg``: asyncpg, ``mysql``: aiomysql), ``schema`` is the default schema's
DDL, and ``connector`` answers the four questions.
"""

from billhub.connectors.database.connector import DatabaseConnector, receipt_for

__all__ = ["DatabaseConnector", "receipt_for"]
