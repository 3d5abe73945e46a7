export { ALLOW_ALL, Authorizer, type AuthzDecision, type AuthzRequest } from './authorizer.js';
export {
  isRbacFilter,
  METADATA_KEYS,
  type MetadataKey,
  type Permission,
  type Principal,
  parseRbac,
  parseRbacFilter,
  type RbacConfig,
  type RbacPolicy,
  SOCKMESH_METADATA_FILTER,
} from './rbac.js';
