//! testbed: Kubernetes service discovery rebuilt on one Linux machine out of real
//! kernel parts. See the README and `shared/docs/design.md` for the whole picture.

pub mod api;
pub mod clean;
pub mod cli;
pub mod cluster;
pub mod control;
pub mod controllers;
pub mod dns;
pub mod errors;
pub mod exec;
pub mod graph;
pub mod impair;
pub mod informer;
pub mod input;
pub mod kernel;
pub mod kubelet;
pub mod lifecycle;
pub mod limits;
pub mod manifest;
pub mod names;
pub mod netns;
pub mod plan;
pub mod probe;
pub mod proxy;
pub mod rest;
pub mod run;
pub mod scenario;
pub mod state;
pub mod tools;
pub mod topology;
pub mod trace;
pub mod yaml;
