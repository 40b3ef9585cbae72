//! The simulated Qonto API.
