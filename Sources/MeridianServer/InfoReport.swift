import MeridianCore
import MeridianStorage
import NIOCore

extension String {
    /// A number with two decimals (without Foundation's formatter).
    init(format2 value: Double) {
        let hundredths = Int((value * 100).rounded())
        let fraction = hundredths % 100
        self = "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Renders INFO in Redis's `# Section` / `field:value` format. Field names follow Redis where
/// the meaning is the same, so existing dashboards and `redis-cli info` readers work.
struct InfoReport {
    let server: ServerContext

    static let defaultSections = ["server", "clients", "memory", "persistence", "stats", "replication", "strong", "cluster", "cpu", "keyspace"]
    /// Section headers exactly as Redis writes them.
    static let headers = [
        "server": "Server", "clients": "Clients", "memory": "Memory", "persistence": "Persistence",
        "stats": "Stats", "replication": "Replication", "strong": "Strong", "cluster": "Cluster", "cpu": "CPU", "keyspace": "Keyspace",
    ]

    func render(sections requested: [String]) -> String {
        var names: [String]
        if requested.isEmpty || requested.contains("default") || requested.contains("all") || requested.contains("everything") {
            names = Self.defaultSections
        } else {
            names = Self.defaultSections.filter { requested.contains($0) }
        }
        if names.isEmpty { return "" }
        var text = ""
        for name in names {
            if !text.isEmpty { text += "\r\n" }
            text += "# \(Self.headers[name] ?? name)\r\n"
            for (field, value) in fields(of: name) { text += "\(field):\(value)\r\n" }
        }
        return text
    }

    /// INFO persistence: warm-up progress, the write-behind queue and the syncs. RDB and AOF
    /// fields that tools commonly read are kept with their honest values (there is no RDB
    /// file or AOF; the store is RocksDB).
    private func persistenceFields() -> [(String, String)] {
        let progress = server.warmUp
        let loading = progress.loading.load(ordering: .relaxed)
        let estimate = progress.estimatedRecords.load(ordering: .relaxed)
        let scanned = progress.scannedRecords.load(ordering: .relaxed)
        let percent = estimate > 0 ? min(100.0, Double(scanned) * 100 / Double(estimate)) : (loading ? 0 : 100)
        let durable = server.configuration.namespaces.filter { $0.durability != .memory }
        var fields: [(String, String)] = [
            ("loading", loading ? "1" : "0"),
            ("async_loading", loading ? "1" : "0"),
            ("loading_loaded_keys", "\(progress.installedKeys.load(ordering: .relaxed))"),
            ("loading_scanned_records", "\(scanned)"),
            ("loading_records_estimate", "\(estimate)"),
            ("loading_loaded_perc", String(format2: percent)),
            ("loading_expired_records_dropped", "\(progress.expiredRecords.load(ordering: .relaxed))"),
            ("loading_corrupt_records", "\(progress.corruptRecords.load(ordering: .relaxed))"),
            ("loading_dropped_records", "\(progress.droppedRecords.load(ordering: .relaxed))"),
            ("loading_stopped_at_maxmemory", progress.stoppedForMemory.load(ordering: .relaxed) ? "1" : "0"),
            ("loading_duration_ms", "\(max(0, (loading ? SystemClock.nowUnixMs() : progress.finishedUnixMs.load(ordering: .relaxed)) - progress.startedUnixMs.load(ordering: .relaxed)))"),
            ("durable_namespaces", durable.map { "\($0.name)=\($0.durability.rawValue)" }.joined(separator: ",")),
        ]
        guard let storage = server.database.storage else {
            fields += [("storage_engine", "none"), ("rdb_changes_since_last_save", "0"), ("rdb_bgsave_in_progress", "0"), ("aof_enabled", "0")]
            return fields
        }
        let statistics = storage.statisticsSnapshot()
        let histogram = statistics.syncLatency
        fields += [
            ("storage_engine", RocksDBStore.engineName),
            ("data_dir", server.dataDirectory),
            ("pending_write_back_bytes", "\(statistics.pendingBytes)"),
            ("pending_keys", "\(statistics.pendingKeys)"),
            ("rdb_changes_since_last_save", "\(statistics.pendingKeys)"),
            ("rdb_bgsave_in_progress", "0"),
            ("rdb_last_save_time", "\((statistics.lastSyncUnixMs > 0 ? statistics.lastSyncUnixMs : server.startUnixMs) / 1000)"),
            ("aof_enabled", "0"),
            ("last_sync_unix_ms", "\(statistics.lastSyncUnixMs)"),
            ("last_sync_ms_ago", statistics.lastSyncUnixMs > 0 ? "\(SystemClock.nowUnixMs() - statistics.lastSyncUnixMs)" : "-1"),
            ("last_sync_us", "\(statistics.lastSyncMicroseconds)"),
            ("syncs", "\(statistics.flushes)"),
            ("synced_states", "\(statistics.flushedStates)"),
            ("synced_bytes", "\(statistics.flushedBytes)"),
            ("sync_latency_us", "p50=\(histogram.quantileMicroseconds(0.5)),p99=\(histogram.quantileMicroseconds(0.99)),p999=\(histogram.quantileMicroseconds(0.999)),max=\(histogram.maxMicroseconds),mean=\(histogram.meanMicroseconds)"),
            ("write_back_late_flushes", "\(statistics.lateFlushes)"),
            ("disk_reads", "\(server.diskReader?.reads.load(ordering: .relaxed) ?? 0)"),
            ("disk_reads_shared", "\(server.diskReader?.sharedReads.load(ordering: .relaxed) ?? 0)"),
            ("storage_failure", statistics.failure ?? ""),
            ("audit_retention_ms", "\(server.database.auditRetentionMs)"),
            ("audit_log_appends", "\(server.database.auditAppends.load(ordering: .relaxed))"),
            ("audit_log_appended_bytes", "\(server.database.auditAppendedBytes.load(ordering: .relaxed))"),
            ("audit_export_chunks", "\(server.database.auditExportChunks.load(ordering: .relaxed))"),
            ("audit_export_lines", "\(server.database.auditExportLines.load(ordering: .relaxed))"),
        ]
        return fields
    }

    private func fields(of section: String) -> [(String, String)] {
        let database = server.database
        let statistics = database.statistics
        switch section {
        case "server":
            let address = server.listenAddress.withLockedValue { $0 }
            let uptimeMs = Int64((SystemClock.monotonicNs() - server.startMonotonicNs) / 1_000_000)
            return [
                ("redis_version", ServerContext.redisCompatibleVersion),
                ("meridian_version", ServerContext.meridianVersion),
                ("redis_mode", "standalone"),
                ("process_id", "\(server.processID)"),
                ("tcp_port", "\(address.port)"),
                ("bind", address.host),
                ("node", server.nodeName),
                ("datacenter", server.datacenterName),
                ("cluster", server.configuration.cluster.name),
                ("config_file", server.configFile ?? ""),
                ("uptime_in_seconds", "\(uptimeMs / 1000)"),
                ("uptime_in_days", "\(uptimeMs / 86_400_000)"),
                ("event_loop_threads", "\(server.eventLoopCount)"),
                ("keyspace_shards", "\(Database.shardCount)"),
            ]
        case "clients":
            return [
                ("connected_clients", "\(server.clients.count)"),
                ("maxclients", "\(server.maxClients.load(ordering: .relaxed))"),
            ]
        case "memory":
            let used = database.usedBytes
            let limit = database.maxmemoryBytes.load(ordering: .relaxed)
            let rss = Self.residentSetBytes()
            return [
                ("used_memory", "\(used)"),
                ("used_memory_human", Units.humanBytes(used)),
                ("used_memory_rss", "\(rss)"),
                ("used_memory_rss_human", Units.humanBytes(rss)),
                ("maxmemory", "\(limit)"),
                ("maxmemory_human", Units.humanBytes(limit)),
                ("maxmemory_policy", "allkeys-lru"),
                ("maxmemory_samples", "\(database.evictionSamples.load(ordering: .relaxed))"),
                ("entry_overhead_bytes", "\(Limits.entryOverheadBytes)"),
            ]
        case "persistence":
            return persistenceFields()
        case "stats":
            let counters = database.namespaceCounters()
            return [
                ("total_connections_received", "\(statistics.connectionsReceived.load(ordering: .relaxed))"),
                ("total_commands_processed", "\(statistics.commandsProcessed)"),
                ("expired_keys", "\(counters.reduce(0) { $0 + $1.expiredKeys })"),
                ("evicted_keys", "\(counters.reduce(0) { $0 + $1.evictedKeys })"),
                ("keyspace_hits", "\(statistics.keyspaceHits)"),
                ("keyspace_misses", "\(statistics.keyspaceMisses)"),
                ("rejected_writes_oom", "\(statistics.rejectedCommandsOOM.load(ordering: .relaxed))"),
                ("total_error_replies", "\(statistics.errorReplies)"),
                ("active_expire_cycles", "\(statistics.activeExpiryCycles.load(ordering: .relaxed))"),
            ]
        case "replication":
            var fields = [("role", "master"), ("connected_slaves", "0")]
            if let links = server.peerLinks.withLockedValue({ $0 }) {
                fields += links.infoFields()
            } else {
                fields.append(("peer_links", "0"))
            }
            return fields
        case "strong":
            // The strong engine's counters (docs/CONSISTENCY.md, "INFO strong").
            guard let engine = server.strong else { return [("strong_enabled", "0")] }
            let statistics = engine.currentStatistics
            let configuration = engine.configuration
            return [
                ("strong_enabled", "1"),
                ("strong_voters", engine.voterNames.joined(separator: ",")),
                ("strong_voter_index", "\(engine.me)"),
                ("strong_lease_ms", "\(configuration.leaseMs)"),
                ("strong_timeout_ms", "\(configuration.timeoutMs)"),
                ("strong_partitions_active", "\(statistics.partitionsActive)"),
                ("strong_partitions_led", "\(statistics.partitionsLed)"),
                ("strong_leases_held", "\(statistics.leasesHeld)"),
                ("strong_commands", "\(statistics.commandsSubmitted)"),
                ("strong_replies", "\(statistics.replies)"),
                ("strong_no_quorum", "\(statistics.noQuorum)"),
                ("strong_uncertain", "\(statistics.uncertain)"),
                ("strong_entries_applied", "\(statistics.entriesApplied)"),
                ("strong_messages_sent", "\(statistics.messagesSent)"),
                ("strong_messages_received", "\(statistics.messagesReceived)"),
                ("strong_messages_dropped", "\(statistics.messagesDropped)"),
                ("strong_messages_rejected", "\(statistics.messagesRejected)"),
                ("strong_synced_batches", "\(statistics.syncedBatches)"),
                ("strong_sync_avg_us", "\(statistics.syncedBatches == 0 ? 0 : statistics.syncMicrosecondsTotal / statistics.syncedBatches)"),
            ]
        case "cluster":
            // Scale-out inside the data center (docs/CLUSTER.md, "INFO cluster").
            guard let engine = server.cluster else {
                return [("cluster_enabled", "1"), ("cluster_members", "1"), ("cluster_members_alive", "1")]
            }
            let statistics = engine.currentStatistics
            let node = statistics.node
            let placement = engine.currentPlacement
            let dead = server.database.deadStates()
            return [
                ("cluster_enabled", "1"),
                ("cluster_members", "\(placement.members.count)"),
                ("cluster_members_alive", "\(statistics.membersAlive)"),
                ("cluster_member", statistics.isMember ? "yes" : "no"),
                ("cluster_member_index", engine.memberID.map { "\($0)" } ?? "-1"),
                ("cluster_placement_epoch", "\(statistics.placementEpoch)"),
                ("cluster_placement", placement.members.map { $0.state == .active ? $0.name : "\($0.name)(\($0.state))" }.joined(separator: ",")),
                ("cluster_placement_voters", engine.voterNames.joined(separator: ",")),
                ("cluster_change", statistics.change.isEmpty ? "none" : statistics.change),
                ("cluster_partitions_moving", "\(statistics.partitionsMoving)"),
                ("cluster_partitions_streaming_in", "\(statistics.partitionsStreamingIn)"),
                ("cluster_move_entries_received", "\(node.moveEntriesReceived)"),
                ("cluster_partitions_dropped", "\(node.partitionsDropped)"),
                ("cluster_changes_committed", "\(statistics.changesCommitted)"),
                ("cluster_changes_refused", "\(statistics.changesRefused)"),
                ("cluster_writes_replicated", "\(statistics.writesReplicated)"),
                ("cluster_writes_timed_out", "\(statistics.writesTimedOut)"),
                ("cluster_commands_forwarded", "\(statistics.commandsForwarded)"),
                ("cluster_forwarded_commands_run", "\(statistics.forwardedCommandsRun)"),
                ("cluster_forwards_refused", "\(statistics.forwardsRefused)"),
                ("cluster_hints_held", "\(statistics.hintsHeld)"),
                ("cluster_hints_stored", "\(node.hintsStored)"),
                ("cluster_hints_replayed", "\(node.hintsReplayed)"),
                ("cluster_hints_discarded", "\(node.hintsDiscarded)"),
                ("cluster_hints_dropped_for_bound", "\(statistics.hintsDropped)"),
                ("cluster_partitions_rebuilding", "\(statistics.partitionsRebuilding)"),
                ("cluster_partitions_rebuilt", "\(node.partitionsRebuilt)"),
                ("cluster_dead_states", "\(dead.count)"),
                ("cluster_dead_state_bytes", "\(dead.bytes)"),
                ("cluster_read_repairs", "\(node.readRepairs)"),
                ("cluster_anti_entropy_entries_sent", "\(node.antiEntropyEntriesSent)"),
                ("cluster_anti_entropy_repairs", "\(node.antiEntropyRepairs)"),
                ("cluster_messages_sent", "\(statistics.messagesSent)"),
                ("cluster_messages_received", "\(statistics.messagesReceived)"),
                ("cluster_messages_dropped", "\(statistics.messagesDropped)"),
            ]
        case "cpu":
            var usage = rusage()
            getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
            func seconds(_ time: timeval) -> String {
                let micros = Int(time.tv_sec) * 1_000_000 + Int(time.tv_usec)
                return "\(micros / 1_000_000).\(String(repeating: "0", count: 6 - String(micros % 1_000_000).count))\(micros % 1_000_000)"
            }
            return [("used_cpu_sys", seconds(usage.ru_stime)), ("used_cpu_user", seconds(usage.ru_utime))]
        case "keyspace":
            let counters = database.namespaceCounters()
            let keys = counters.reduce(0) { $0 + $1.keys }
            let expires = counters.reduce(0) { $0 + $1.keysWithExpiry }
            var result: [(String, String)] = []
            if keys > 0 { result.append(("db0", "keys=\(keys),expires=\(expires),avg_ttl=0")) }
            for (index, namespace) in database.namespaces.namespaces.enumerated() {
                let c = counters[index]
                let ttl = namespace.defaultTTLMs.map { "\($0)" } ?? "0"
                result.append((
                    "ns_\(namespace.name)",
                    "keys=\(c.keys),expires=\(c.keysWithExpiry),bytes=\(c.bytes),expired=\(c.expiredKeys),evicted=\(c.evictedKeys),prefix=\(String(decoding: namespace.prefix, as: UTF8.self)),consistency=\(namespace.consistency.rawValue),durability=\(namespace.durability.rawValue),eviction=\(namespace.eviction.rawValue),default_ttl_ms=\(ttl)"
                ))
            }
            return result
        default:
            return []
        }
    }

    /// Resident set size from /proc (0 where unavailable).
    static func residentSetBytes() -> Int {
        guard let file = fopen("/proc/self/statm", "r") else { return 0 }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 128)
        guard fgets(&buffer, 128, file) != nil else { return 0 }
        let parts = String(cString: buffer).split(separator: " ")
        guard parts.count >= 2, let pages = Int(parts[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }
}
