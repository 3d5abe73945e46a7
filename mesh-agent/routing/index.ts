export {
  DEFAULT_ROUTE_TIMEOUT_MS,
  parseHeaderMatcher,
  parseRouteConfiguration,
  parseRouteMatch,
} from './config.js';
export { hashKeyFor } from './hash-key.js';
export { applyHeaderMutations, type MutableHeaders, requestMutationLevels } from './headers.js';
export {
  headerValue,
  matchHeader,
  matchPath,
  matchRoute,
  parseQuery,
  type RouteDecision,
  selectRoute,
  selectVirtualHost,
  stripPort,
} from './select.js';
export {
  compileFullMatch,
  matchString,
  parseRegexMatcher,
  parseStringMatcher,
  type StringMatcher,
} from './string-match.js';
export type * from './types.js';
export { chooseCluster, pickWeightedCluster } from './weighted.js';
