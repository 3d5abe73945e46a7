export { DEFAULT_OUTLIER, type OutlierConfig, parseOutlierDetection } from './config.js';
export { type EjectionType, OutlierDetector, type OutlierEvent, type OutlierOutcome } from './detector.js';
