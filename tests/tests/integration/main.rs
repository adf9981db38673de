//! dbprov's integration tests, one binary: every module starts the real components it needs
//! (kube-apiserver + etcd, PostgreSQL, MariaDB, object stores, the hub and agent binaries).
//! One binary instead of one per file: each test binary links the whole dependency graph
//! (~110 MB), so twenty of them cost minutes of linking and gigabytes of disk in CI.

mod access_proofs;
mod account_attacks;
mod agent_identity;
mod api;
mod api_compat;
mod audit_log;
mod audit_requester;
mod audit_sinks;
mod backup_options;
mod backup_pipeline;
mod backup_proofs;
mod backups;
mod chart_rbac;
mod charts;
mod cluster_scoped;
mod database_options;
mod databases;
mod delivery;
mod devenv;
mod drift;
mod engine_database;
mod engine_user;
mod failover;
mod fault_matrix;
mod fault_matrix_engines;
mod fault_matrix_gaps;
mod field_proofs;
mod gatekeeper;
mod grants;
mod init_sql;
mod instance_options;
mod kube_smoke;
mod migrate_flyway;
mod migrate_liquibase;
mod migration_tools;
mod migrations;
mod multicluster;
mod object_stores;
mod policy;
mod provisioning;
mod reference_manifests;
mod restore_once;
mod restore_proofs;
mod restore_sandbox;
mod retention_identity;
mod rotation;
mod rotation_faults;
mod secret_leaks;
mod snapshot;
mod tenancy_attacks;
mod tools;
mod transport;
mod user_options;
