//! Backup options proven against real servers and object stores (issue 15).
