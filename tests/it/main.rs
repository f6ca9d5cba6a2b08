//! Integration tests: the real depwatch binary against real servers, in one
//! test binary so that it links once.

mod bundle;
mod config;
mod core;
mod http;
mod logs;
mod mongodb;
mod redis;
mod reload;
mod storage;
mod support;
