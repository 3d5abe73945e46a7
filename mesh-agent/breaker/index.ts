export { type Acquired, BREAKER_RESOURCES, type BreakerResource, CircuitBreaker } from './circuit-breaker.js';
export { type BreakerThresholds, DEFAULT_THRESHOLDS, parseCircuitBreakers } from './thresholds.js';
