//! Measures shared by the simulator and the real-broker experiment: latency quantiles and
//! load imbalance against the lower bound of any order-preserving strategy.
