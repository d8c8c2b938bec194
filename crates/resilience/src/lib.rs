//! Circuit breakers, retries with budgets, timeouts and bulkheads
