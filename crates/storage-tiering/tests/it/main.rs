//! Integration tests of mainstay-storage-tiering: the real file system in temp dirs, an
//! in-process fault-injecting object store on paused time for exact rules, an in-process S3 server
//! for real sockets (with scripted error answers), and SIGKILLed child processes for crash
//! safety.

mod backup;
mod catalog;
mod common;
mod crash;
mod damaged;
mod fencing;
mod handover;
#[cfg(feature = "health")]
mod health;
mod http_status;
mod keyring;
mod model;
mod offline;
mod orphans;
mod outage;
mod power_loss;
mod purge;
mod records;
mod s3;
mod s3_server;
mod tiering;
mod wal;
