//! Integration tests: the real depwatch binary against real servers, and
//! the library in process (`router`, `scheduler`), in one test binary so
//! that it links once.

mod alerting;
mod bundle;
mod config;
mod core;
mod http;
mod latency;
mod logs;
mod mongodb;
mod redis;
mod refresh;
mod reload;
mod router;
mod scheduler;
mod server;
mod storage;
mod support;
