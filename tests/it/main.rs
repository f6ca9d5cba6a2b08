//! Integration tests: the real depwatch binary against real servers, and
//! the library in process (`router`, `scheduler`), in one test binary so
//! that it links once.

mod alerting;
mod bundle;
mod config;
mod coordination;
mod core;
mod events;
mod http;
mod latency;
mod logs;
mod mongodb;
mod page;
mod redis;
mod refresh;
mod reload;
mod router;
mod scaleout;
mod scheduler;
mod scrape;
mod secrets;
mod security;
mod security_tls;
mod sending;
mod series;
mod server;
mod storage;
mod support;
