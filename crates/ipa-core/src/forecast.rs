//! Demand forecasting over a short horizon (pod start-up + one interval).
