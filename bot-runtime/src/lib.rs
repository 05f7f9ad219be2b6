//! paperbot's trading engine.
//!
//! One engine serves every mode (replay as fast as the CPU allows, paced
//! replay, simulated markets); time always comes from the data through a
//! clock, never from the wall clock inside the engine.

#![warn(missing_docs)]

pub mod analytics;
pub mod api;
pub mod autopilot;
pub mod breakers;
pub mod charts;
pub mod compare;
pub mod config;
pub mod data_cli;
pub mod engine;
pub mod execution;
pub mod feed;
pub mod figures;
pub mod html;
pub mod ledger;
pub mod market;
pub mod params;
pub mod portfolio;
pub mod preflight;
pub mod rebuild;
pub mod report;
pub mod runner;
pub mod service;
pub mod sessions_cli;
pub mod signals;
pub mod sweep;
pub mod types;
