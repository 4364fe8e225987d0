"""PostgreSQL: versioned migrations, partitions and retention."""
