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

/** The metadata of any object, from the API server included (managedFields, ownerReferences...). */
export const OBJECT_META: JsonSchema = {
  type: 'object',
  required: ['name'],
  additionalProperties: false,
  properties: {
    name: str,
    generateName: str,
    namespace: str,
    uid: str,
    resourceVersion: str,
    generation: int,
    creationTimestamp: str,
    deletionTimestamp: str,
    deletionGracePeriodSeconds: int,
    selfLink: str,
    labels: stringMap,
    annotations: stringMap,
    ownerReferences: { type: 'array', items: open },
    finalizers: { type: 'array', items: str },
    managedFields: { type: 'array', items: open },
  },
};

function topLevel(properties: JsonSchema, required: string[] = []): JsonSchema {
  return {
    type: 'object',
    required: ['apiVersion', 'kind', 'metadata', ...required],
    additionalProperties: false,
    properties: { apiVersion: str, kind: str, metadata: OBJECT_META, ...properties },
  };
}

const NAMESPACE = topLevel({ spec: open, status: open });

const SERVICE_PORT = {
  type: 'object',
  required: ['port'],
  additionalProperties: false,
  properties: {
    name: str,
    port: int,
    targetPort: { type: ['integer', 'string'] },
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
        selector: stringMap,
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
);

const CONTAINER_PORT = {
  type: 'object',
  required: ['containerPort'],
  additionalProperties: false,
  properties: { name: str, containerPort: int, protocol: str, hostPort: int, hostIP: str },
};

const POD = topLevel({
  spec: {
    type: 'object',
    properties: {
      serviceAccountName: str,
      nodeName: str,
      containers: {
        type: 'array',
        items: { type: 'object', properties: { ports: { type: 'array', items: CONTAINER_PORT } } },
      },
    },
  },
  status: { type: 'object', properties: { podIP: str, qosClass: str } },
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
