/**
 * The agent's metric instruments, named after Istio's standard metrics with a
 * `sockmesh_` prefix. Works on any OTel Meter, so the same code serves the
 * Prometheus endpoint and any other reader.
 *
 * Cardinality: every label value comes from the mesh config (workloads,
 * services, clusters, versions, policies, SPIFFE IDs of issued SVIDs) or a
 * closed set (protocol, reporter, code, flags, breaker kind). Nothing
 * per-request (paths, IPs, ports, ids) is ever a label.
 */
import type { Attributes, Counter, Meter, ObservableResult } from '@opentelemetry/api';
import { REQUEST_DURATION, REQUESTS_TOTAL, RequestMetrics } from './request-metrics.js';
import { TCP_CLOSED, TCP_OPENED, TCP_RECEIVED, TCP_SENT, TcpMetrics } from './tcp-metrics.js';
import type {
  AuthzDenial,
  BpfCounters,
  BreakerKind,
  IdentityRejection,
  KernelPolicyCount,
  RequestEvent,
  SvidInfo,
  TcpCloseEvent,
  TcpEvent,
  TcpHealthPair,
  XdsState,
} from './types.js';

export const METRIC = {
  requests: REQUESTS_TOTAL,
  requestDuration: REQUEST_DURATION,
  tcpOpened: TCP_OPENED,
  tcpClosed: TCP_CLOSED,
  tcpSent: TCP_SENT,
  tcpReceived: TCP_RECEIVED,
  breakerOverflows: 'sockmesh_breaker_overflows_total',
  outlierEjections: 'sockmesh_outlier_ejections_total',
  outlierEjected: 'sockmesh_outlier_ejected_endpoints',
  outlierSkipped: 'sockmesh_outlier_ejections_skipped_total',
  authzDenials: 'sockmesh_authz_denials_total',
  identityRejections: 'sockmesh_identity_rejections_total',
  xdsConnected: 'sockmesh_xds_connected',
  xdsConfigVersion: 'sockmesh_xds_config_version_info',
  svidExpiry: 'sockmesh_svid_expiry_seconds',
  bpfCounter: 'sockmesh_bpf_counter_total',
  tcpHealthConnections: 'sockmesh_tcp_health_connections_total',
  tcpHealthFailures: 'sockmesh_tcp_health_failures_total',
  tcpHealthRetransmits: 'sockmesh_tcp_health_retransmits_total',
  tcpHealthRtos: 'sockmesh_tcp_health_rtos_total',
  tcpHealthRttSamples: 'sockmesh_tcp_health_rtt_samples_total',
  tcpHealthSrttSum: 'sockmesh_tcp_health_srtt_microseconds_total',
  tcpHealthRttvarSum: 'sockmesh_tcp_health_rttvar_microseconds_total',
  tcpHealthSrtt: 'sockmesh_tcp_health_srtt_microseconds',
  tcpHealthRttvar: 'sockmesh_tcp_health_rttvar_microseconds',
  kernelPolicy: 'sockmesh_kernel_policy_connections_total',
  accessLogDropped: 'sockmesh_access_log_dropped_total',
} as const;

const UNKNOWN = 'unknown';

type Source<T> = () => T;

export class MeshMetrics {
  private readonly overflows: Counter;
  private readonly ejections: Counter;
  private readonly skipped: Counter;
  private readonly denials: Counter;
  private readonly identityRejections: Counter;

  private readonly ejected = new Map<string, Set<string>>();
  private xdsSource: Source<XdsState> | null = null;
  private svidSource: Source<readonly SvidInfo[]> | null = null;
  private bpfSource: Source<BpfCounters> | null = null;
  private tcpHealthSource: Source<readonly TcpHealthPair[]> | null = null;
  private kernelPolicySource: Source<readonly KernelPolicyCount[]> | null = null;
  private logDropSource: Source<number> | null = null;

  /**
   * @param requests, tcp where the hot-path metrics are aggregated; both must
   *   also be registered as MetricProducers on the reader (MeshTelemetry does this).
   */
  constructor(
    meter: Meter,
    readonly requests: RequestMetrics = new RequestMetrics(),
    readonly tcp: TcpMetrics = new TcpMetrics(),
  ) {
    this.overflows = meter.createCounter(METRIC.breakerOverflows, {
      description: 'Requests or connections failed fast by a circuit breaker, by cluster and threshold',
    });
    this.ejections = meter.createCounter(METRIC.outlierEjections, {
      description: 'Endpoints ejected by outlier detection, by cluster and detector type',
    });
    this.skipped = meter.createCounter(METRIC.outlierSkipped, {
      description: 'Outliers detected but not ejected (max ejection percent reached, or not enforced)',
    });
    this.denials = meter.createCounter(METRIC.authzDenials, {
      description: 'Connections or requests denied by authorization policy',
    });
    this.identityRejections = meter.createCounter(METRIC.identityRejections, {
      description:
        'Handshakes, connections and requests refused, or identity headers replaced, because they claimed an identity the mesh could not verify; by listener and reason',
    });
    meter
      .createObservableCounter(METRIC.accessLogDropped, {
        description: 'Access log lines dropped because the sink could not keep up',
      })
      .addCallback((r) => {
        if (this.logDropSource) r.observe(this.logDropSource());
      });

    meter
      .createObservableGauge(METRIC.outlierEjected, {
        description: 'Endpoints currently ejected, by cluster',
      })
      .addCallback((r) => {
        for (const [cluster, set] of this.ejected) r.observe(set.size, { cluster });
      });
    meter
      .createObservableGauge(METRIC.xdsConnected, {
        description: '1 while the ADS stream to the control plane is up, else 0',
      })
      .addCallback((r) => this.collectXdsConnected(r));
    meter
      .createObservableGauge(METRIC.xdsConfigVersion, {
        description: 'Always 1; labels carry the last ACKed version per xDS type URL',
      })
      .addCallback((r) => this.collectXdsVersions(r));
    meter
      .createObservableGauge(METRIC.svidExpiry, {
        description: 'Seconds until each held X.509-SVID expires (negative once expired)',
        unit: 's',
      })
      .addCallback((r) => this.collectSvids(r));
    meter
      .createObservableCounter(METRIC.bpfCounter, {
        description: 'Counters read from the kernel programs, by counter name',
      })
      .addCallback((r) => this.collectBpf(r));
    meter
      .createObservableCounter(METRIC.kernelPolicy, {
        description:
          'Connections the kernel allowed or denied by L4 authorization policy (connect4, sk_lookup)',
      })
      .addCallback((r) => {
        for (const c of this.kernelPolicySource?.() ?? []) {
          r.observe(Number(c.allowed), { policy: c.policy, verdict: 'allowed' });
          r.observe(Number(c.denied), { policy: c.policy, verdict: 'denied' });
        }
      });
    this.registerTcpHealth(meter);
  }

  /** Kernel TCP health per workload pair: one map read per scrape for all nine series. */
  private registerTcpHealth(meter: Meter): void {
    const counter = (name: string, description: string, unit?: string) =>
      meter.createObservableCounter(name, { description, ...(unit ? { unit } : {}) });
    const counters = [
      [
        counter(METRIC.tcpHealthConnections, 'Connections the kernel measured, by workload pair and leg'),
        'connections',
      ],
      [
        counter(
          METRIC.tcpHealthFailures,
          'Connections that failed to connect or ended by a reset or a timeout',
        ),
        'failures',
      ],
      [counter(METRIC.tcpHealthRetransmits, 'TCP segments retransmitted'), 'retransmits'],
      [counter(METRIC.tcpHealthRtos, 'TCP retransmission timeouts'), 'rtos'],
      [counter(METRIC.tcpHealthRttSamples, 'RTT samples taken (one per ACK of new data)'), 'rttSamples'],
      [
        counter(
          METRIC.tcpHealthSrttSum,
          'Sum of the smoothed RTT at each sample (divide by the samples)',
          'us',
        ),
        'srttSumUs',
      ],
      [
        counter(METRIC.tcpHealthRttvarSum, 'Sum of the RTT mean deviation (jitter) at each sample', 'us'),
        'rttvarSumUs',
      ],
    ] as const;
    const gauges = [
      [
        meter.createObservableGauge(METRIC.tcpHealthSrtt, {
          description: 'Smoothed RTT at the latest sample',
          unit: 'us',
        }),
        'srttUs',
      ],
      [
        meter.createObservableGauge(METRIC.tcpHealthRttvar, {
          description: 'RTT mean deviation (jitter) at the latest sample',
          unit: 'us',
        }),
        'rttvarUs',
      ],
    ] as const;
    const all = [...counters, ...gauges];
    meter.addBatchObservableCallback(
      (r) => {
        const pairs = this.tcpHealthSource?.();
        if (!pairs) return;
        for (const p of pairs) {
          const labels = tcpHealthLabels(p);
          for (const [instrument, field] of all) r.observe(instrument, p[field], labels);
        }
      },
      all.map(([instrument]) => instrument),
    );
  }

  observeKernelPolicy(source: Source<readonly KernelPolicyCount[]> | null): void {
    this.kernelPolicySource = source;
  }

  requestCompleted(ev: RequestEvent): void {
    this.requests.record(ev);
  }

  tcpOpened(ev: TcpEvent): void {
    this.tcp.connectionOpened(ev);
  }

  /** Counts bytes of a still-open connection (call periodically for long-lived ones). */
  tcpBytes(ev: TcpEvent, bytesSent: number, bytesReceived: number): void {
    this.tcp.bytes(ev, bytesSent, bytesReceived);
  }

  /** Counts the close and the bytes not yet reported through {@link tcpBytes}. */
  tcpClosed(ev: TcpCloseEvent): void {
    this.tcp.bytes(ev, ev.bytesSent, ev.bytesReceived);
    this.tcp.connectionClosed(ev, ev.flags ?? '-');
  }

  breakerOverflow(cluster: string, kind: BreakerKind): void {
    this.overflows.add(1, { cluster, kind });
  }

  /** Counts an ejection and marks the endpoint ejected until {@link outlierRestored}. */
  outlierEjection(cluster: string, endpoint: string, type = 'consecutive_5xx'): void {
    this.ejections.add(1, { cluster, type });
    let set = this.ejected.get(cluster);
    if (!set) {
      set = new Set();
      this.ejected.set(cluster, set);
    }
    set.add(endpoint);
  }

  outlierRestored(cluster: string, endpoint: string): void {
    const set = this.ejected.get(cluster);
    if (!set) return;
    // The cluster stays, so the gauge reads 0 rather than vanishing.
    set.delete(endpoint);
  }

  outlierSkipped(cluster: string, type: string, reason: string): void {
    this.skipped.add(1, { cluster, type, reason });
  }

  authzDenied(d: AuthzDenial): void {
    this.denials.add(1, {
      source_principal: d.sourcePrincipal || '-',
      destination_workload: d.destinationWorkload || UNKNOWN,
      destination_namespace: d.destinationNamespace || UNKNOWN,
      policy: d.policy || UNKNOWN,
    });
  }

  identityRejected(r: IdentityRejection): void {
    this.identityRejections.add(1, { listener: r.listener, reason: r.reason });
  }

  /** Reads the access log's drop count at scrape time. */
  observeAccessLogDrops(source: Source<number> | null): void {
    this.logDropSource = source;
  }

  /** Registers (or replaces, or with null removes) the agent's xDS state source. */
  observeXds(source: Source<XdsState> | null): void {
    this.xdsSource = source;
  }

  observeSvids(source: Source<readonly SvidInfo[]> | null): void {
    this.svidSource = source;
  }

  observeBpfCounters(source: Source<BpfCounters> | null): void {
    this.bpfSource = source;
  }

  /** The kernel's TCP health per workload pair, read at scrape time. */
  observeTcpHealth(source: Source<readonly TcpHealthPair[]> | null): void {
    this.tcpHealthSource = source;
  }

  private collectXdsConnected(r: ObservableResult<Attributes>): void {
    const s = this.xdsSource?.();
    if (s) r.observe(s.connected ? 1 : 0);
  }

  private collectXdsVersions(r: ObservableResult<Attributes>): void {
    const s = this.xdsSource?.();
    if (!s) return;
    for (const [typeUrl, version] of Object.entries(s.versions)) r.observe(1, { type_url: typeUrl, version });
  }

  private collectSvids(r: ObservableResult<Attributes>): void {
    const svids = this.svidSource?.();
    if (!svids) return;
    const now = Date.now();
    for (const s of svids) r.observe((s.notAfter.getTime() - now) / 1000, { spiffe_id: s.spiffeId });
  }

  private collectBpf(r: ObservableResult<Attributes>): void {
    const counters = this.bpfSource?.();
    if (!counters) return;
    for (const [name, value] of Object.entries(counters)) r.observe(Number(value), { counter: name });
  }
}

/** The mesh's peer labels for a kernel pair; `leg` says which hop was measured. */
export function tcpHealthLabels(p: TcpHealthPair): Attributes {
  return {
    leg: p.leg,
    source_workload: p.source?.workload || UNKNOWN,
    source_namespace: p.source?.namespace || UNKNOWN,
    destination_workload: p.destination?.workload || UNKNOWN,
    destination_namespace: p.destination?.namespace || UNKNOWN,
  };
}
