/**
 * JSON Schemas for the kinds that have no CRD: core Namespace, Service, Pod,
 * Node and EndpointSlice, and sockmesh's directory-only Node. They cover the
 * fields the model reads, with Kubernetes' types; the top level and every map
 * the model reads field by field are closed (an unknown field is refused, as
 * the API server's strict field validation does). Parts sockmesh ignores
 * (container images, resources, most of a Pod's status) stay open, so an
 * object copied from a cluster is accepted.
 */

export type JsonSchema = Record<string, unknown>;

const str = { type: 'string' };
const int = { type: 'integer' };
const bool = { type: 'boolean' };
const open = { type: 'object' };
const stringMap = { type: 'object', additionalProperties: str };

/** Label keys (`prefix/name`) and values, as the API server checks them on every object. */
const LABEL_KEY =
  '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$';
const LABEL_VALUE = {
  type: 'string',
  maxLength: 63,
  pattern: '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$',
};
export const LABELS: JsonSchema = {
  type: 'object',
  propertyNames: { maxLength: 317, pattern: LABEL_KEY },
  additionalProperties: LABEL_VALUE,
};

/**
 * The metadata of any object, from the API server included (managedFields,
 * ownerReferences...). Names are at most 253 characters (63 for kinds named
 * by a DNS label: Namespace, Service); their form is the model's check.
 */
export function objectMeta(nameMax: 63 | 253): JsonSchema {
  return {
    type: 'object',
    required: ['name'],
    additionalProperties: false,
    properties: {
      name: { type: 'string', maxLength: nameMax },
      generateName: str,
      namespace: { type: 'string', maxLength: 63 },
      uid: str,
      resourceVersion: str,
      generation: int,
      creationTimestamp: str,
      deletionTimestamp: str,
      deletionGracePeriodSeconds: int,
      selfLink: str,
      labels: LABELS,
      annotations: stringMap,
      ownerReferences: { type: 'array', items: open },
      finalizers: { type: 'array', items: str },
      managedFields: { type: 'array', items: open },
    },
  };
}

export const OBJECT_META = objectMeta(253);

function topLevel(properties: JsonSchema, required: string[] = [], meta = OBJECT_META): JsonSchema {
  return {
    type: 'object',
    required: ['apiVersion', 'kind', 'metadata', ...required],
    additionalProperties: false,
    properties: { apiVersion: str, kind: str, metadata: meta, ...properties },
  };
}

const NAMESPACE = topLevel({ spec: open, status: open }, [], objectMeta(63));

const SERVICE_PORT = {
  type: 'object',
  required: ['port'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', maxLength: 63 },
    port: int,
    targetPort: { type: ['integer', 'string'], maxLength: 15 },
    appProtocol: str,
    protocol: str,
  },
};

const SERVICE = topLevel(
  {
    spec: {
      type: 'object',
      required: ['ports'],
      additionalProperties: false,
      properties: {
        selector: { type: 'object', additionalProperties: LABEL_VALUE },
        ports: { type: 'array', items: SERVICE_PORT },
        clusterIP: str,
        clusterIPs: { type: 'array', items: str },
        type: str,
        sessionAffinity: str,
      },
    },
    status: open,
  },
  ['spec'],
  objectMeta(63),
);

const CONTAINER_PORT = {
  type: 'object',
  required: ['containerPort'],
  additionalProperties: false,
  // A container port's name is an IANA service name: at most 15 characters.
  properties: {
    name: { type: 'string', maxLength: 15 },
    containerPort: int,
    protocol: str,
    hostPort: int,
    hostIP: str,
  },
};

/** Every field of a core v1 Container (1.37): closed, so a typo is refused; only ports are read. */
const CONTAINER_FIELDS = [
  'name',
  'image',
  'command',
  'args',
  'workingDir',
  'envFrom',
  'env',
  'resources',
  'resizePolicy',
  'restartPolicy',
  'restartPolicyRules',
  'volumeMounts',
  'volumeDevices',
  'livenessProbe',
  'readinessProbe',
  'startupProbe',
  'lifecycle',
  'terminationMessagePath',
  'terminationMessagePolicy',
  'imagePullPolicy',
  'securityContext',
  'stdin',
  'stdinOnce',
  'tty',
];
/** Every field of a core v1 PodSpec (1.37). */
const POD_SPEC_FIELDS = [
  'volumes',
  'initContainers',
  'ephemeralContainers',
  'restartPolicy',
  'terminationGracePeriodSeconds',
  'activeDeadlineSeconds',
  'dnsPolicy',
  'nodeSelector',
  'serviceAccount',
  'automountServiceAccountToken',
  'hostNetwork',
  'hostPID',
  'hostIPC',
  'shareProcessNamespace',
  'securityContext',
  'imagePullSecrets',
  'hostname',
  'subdomain',
  'affinity',
  'schedulerName',
  'tolerations',
  'hostAliases',
  'priorityClassName',
  'priority',
  'dnsConfig',
  'readinessGates',
  'runtimeClassName',
  'enableServiceLinks',
  'preemptionPolicy',
  'overhead',
  'topologySpreadConstraints',
  'setHostnameAsFQDN',
  'os',
  'hostUsers',
  'schedulingGates',
  'resourceClaims',
  'resources',
  'hostnameOverride',
  'workloadRef',
];
/** Every field of a core v1 PodStatus (1.37). */
const POD_STATUS_FIELDS = [
  'observedGeneration',
  'phase',
  'conditions',
  'message',
  'reason',
  'nominatedNodeName',
  'hostIP',
  'hostIPs',
  'podIPs',
  'startTime',
  'initContainerStatuses',
  'containerStatuses',
  'ephemeralContainerStatuses',
  'resize',
  'resourceClaimStatuses',
  'extendedResourceClaimStatus',
];
const openFields = (names: string[]): JsonSchema => Object.fromEntries(names.map((n) => [n, {}]));

const POD = topLevel({
  spec: {
    type: 'object',
    additionalProperties: false,
    properties: {
      ...openFields(POD_SPEC_FIELDS),
      serviceAccountName: str,
      nodeName: str,
      containers: {
        type: 'array',
        items: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ...openFields(CONTAINER_FIELDS),
            name: { type: 'string', maxLength: 63 },
            ports: { type: 'array', items: CONTAINER_PORT },
          },
        },
      },
    },
  },
  status: {
    type: 'object',
    additionalProperties: false,
    properties: { ...openFields(POD_STATUS_FIELDS), podIP: str, qosClass: str },
  },
});

const MESH_NODE = topLevel(
  {
    spec: {
      type: 'object',
      required: ['address'],
      additionalProperties: false,
      properties: { address: str },
    },
  },
  ['spec'],
);

const CORE_NODE = topLevel({
  spec: open,
  status: {
    type: 'object',
    properties: {
      addresses: {
        type: 'array',
        items: {
          type: 'object',
          required: ['type', 'address'],
          additionalProperties: false,
          properties: { type: str, address: str },
        },
      },
    },
  },
});

const ENDPOINT_SLICE = topLevel(
  {
    addressType: str,
    endpoints: {
      type: 'array',
      items: {
        type: 'object',
        required: ['addresses'],
        properties: {
          addresses: { type: 'array', items: str },
          conditions: {
            type: 'object',
            additionalProperties: false,
            properties: { ready: bool, serving: bool, terminating: bool },
          },
          targetRef: { type: 'object', properties: { kind: str, name: str, namespace: str } },
        },
      },
    },
    ports: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        properties: { name: str, port: int, protocol: str, appProtocol: str },
      },
    },
  },
  ['addressType'],
);

/** kind -> apiVersion -> schema. */
export const CORE_SCHEMAS: Record<string, Record<string, JsonSchema>> = {
  Namespace: { v1: NAMESPACE },
  Service: { v1: SERVICE },
  Pod: { v1: POD },
  Node: { 'sockmesh.io/v1alpha1': MESH_NODE, v1: CORE_NODE },
  EndpointSlice: { 'discovery.k8s.io/v1': ENDPOINT_SLICE },
};
