//! Restore options proven against real servers (issue 15).
