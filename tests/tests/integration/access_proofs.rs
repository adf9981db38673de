//! User, grant and connection options proven against real servers (issue 15).
