//! HTTP-layer tests of the API.
