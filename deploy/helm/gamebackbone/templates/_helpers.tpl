{{/*
Names. Kubernetes names are at most 63 characters; the StatefulSet's at most 52, because
its pods' controller-revision-hash label is "<statefulset>-<10 chars>" and its pods
"<statefulset>-<ordinal>" must keep ending in -<ordinal> (GAMESERVER_NODE_ID=ordinal).
*/}}
{{- define "gamebackbone.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gamebackbone.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"<fullname>-<suffix>" within a length limit (63, or the third argument): the full name is
shortened, never the suffix, so that names of one release stay distinct.
*/}}
{{- define "gamebackbone.componentName" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $max := 63 }}
{{- if gt (len .) 2 }}{{ $max = index . 2 }}{{ end }}
{{- $keep := max 1 (sub $max (add1 (len $suffix))) | int }}
{{- $prefix := include "gamebackbone.fullname" $root | trunc $keep | trimSuffix "-" }}
{{- printf "%s-%s" $prefix $suffix | trunc $max | trimSuffix "-" }}
{{- end }}

{{- define "gamebackbone.gateway.fullname" -}}
{{- include "gamebackbone.componentName" (list . "gateway") }}
{{- end }}

{{- define "gamebackbone.gateway.metricsName" -}}
{{- include "gamebackbone.componentName" (list . "gateway-metrics") }}
{{- end }}

{{- define "gamebackbone.gameserver.fullname" -}}
{{- include "gamebackbone.componentName" (list . "gameserver" 52) }}
{{- end }}

{{- define "gamebackbone.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "gamebackbone.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gamebackbone.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels */}}
{{- define "gamebackbone.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gamebackbone.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "gamebackbone.labels" -}}
helm.sh/chart: {{ include "gamebackbone.chart" . }}
{{ include "gamebackbone.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gamebackbone
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "gamebackbone.gateway.selectorLabels" -}}
{{ include "gamebackbone.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "gamebackbone.gameserver.selectorLabels" -}}
{{ include "gamebackbone.selectorLabels" . }}
app.kubernetes.io/component: gameserver
{{- end }}

{{/* Images: registry/repository@digest or registry/repository:tag (tag defaults to appVersion). */}}
{{- define "gamebackbone.image" -}}
{{- $root := index . 0 }}
{{- $image := index . 1 }}
{{- $repository := $image.repository }}
{{- with $root.Values.image.registry }}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}
{{- end }}
{{- if $image.digest }}
{{- printf "%s@%s" $repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (toString (coalesce $image.tag $root.Values.image.tag $root.Chart.AppVersion)) }}
{{- end }}
{{- end }}

{{- define "gamebackbone.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Secrets the chart creates (one Secret, "<fullname>", keys redis-url, admin-token, auth-secret). */}}
{{- define "gamebackbone.secretName" -}}
{{- include "gamebackbone.fullname" . }}
{{- end }}

{{- define "gamebackbone.redis.url" -}}
{{- $r := .Values.redis }}
{{- $scheme := ternary "rediss" "redis" $r.tls }}
{{- $auth := "" }}
{{- $user := $r.username | default "" | toString | urlquery | replace "+" "%20" }}
{{- if $r.password }}
{{- $auth = printf "%s:%s@" $user ($r.password | toString | urlquery | replace "+" "%20") }}
{{- else if $user }}
{{- $auth = printf "%s@" $user }}
{{- end }}
{{- $urls := list (printf "%s://%s%s:%d/%d" $scheme $auth $r.host (int $r.port) (int $r.database)) }}
{{- if ne $r.mode "standalone" }}
{{- range $r.seeds }}
{{- $urls = append $urls (printf "%s://%s%s/%d" $scheme $auth . (int $r.database)) }}
{{- end }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{- define "gamebackbone.chartSecretData" -}}
{{- if and (not .Values.redis.existingSecret.name) .Values.redis.password }}
redis-url: {{ include "gamebackbone.redis.url" . | quote }}
{{- end }}
{{- if and (not .Values.gameserver.adminToken.existingSecret.name) .Values.gameserver.adminToken.value }}
admin-token: {{ .Values.gameserver.adminToken.value | toString | quote }}
{{- end }}
{{- if and (not .Values.gameserver.auth.existingSecret.name) .Values.gameserver.auth.secret }}
auth-secret: {{ .Values.gameserver.auth.secret | toString | quote }}
{{- end }}
{{- end }}

{{/*
The cluster's CURVE key (mesh.curve). Without mesh.curve.existingSecret the chart makes the
Secret "<fullname>-curve" with key cluster.key: a key already in the cluster is kept (lookup,
so helm upgrade never changes it; lookup finds nothing under helm template/lint and with
--dry-run=client, which then show a fresh key), else a new one.

randAlphaNum 40 is a valid Z85 CURVE secret key: Z85 encodes 4 bytes as 5 characters, and the
alphanumerics are its digits 0..61, so each 5-character group decodes to at most
61*85^4 + 61*85^3 + 61*85^2 + 61*85 + 61 < 62*85^4 < 2^32; libzmq (curve25519) accepts any
32 bytes as a secret key. 40 characters from 62 give 40*log2(62) = 238 bits of entropy.
tests/packaging/test_helm.py decodes a rendered key and derives its public key with pyzmq.

The key is made once per render and kept in .Values.mesh.curve (a map shared by every
template of this chart), so the Secret and the pods' checksum/curve annotations agree.
*/}}
{{- define "gamebackbone.curve.secretName" -}}
{{- if .Values.mesh.curve.existingSecret.name }}
{{- .Values.mesh.curve.existingSecret.name }}
{{- else }}
{{- include "gamebackbone.componentName" (list . "curve") }}
{{- end }}
{{- end }}

{{- define "gamebackbone.curve.secretKey" -}}
{{- ternary .Values.mesh.curve.existingSecret.key "cluster.key" (not (empty .Values.mesh.curve.existingSecret.name)) }}
{{- end }}

{{/* base64 of the chart-made key file (only without mesh.curve.existingSecret). */}}
{{- define "gamebackbone.curve.generatedData" -}}
{{- $memo := .Values.mesh.curve }}
{{- if not (hasKey $memo "_renderedKeyData") }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "gamebackbone.curve.secretName" .) }}
{{- $data := dig "data" "cluster.key" "" ($existing | default dict) }}
{{- if not $data }}
{{- $data = printf "%s\n" (randAlphaNum 40) | b64enc }}
{{- end }}
{{- $_ := set $memo "_renderedKeyData" $data }}
{{- end }}
{{- index $memo "_renderedKeyData" }}
{{- end }}

{{/* Pod annotation value that changes with the key, so that pods roll onto a new key. With
an existing Secret: its content as the cluster has it now (lookup; empty under helm template). */}}
{{- define "gamebackbone.curve.checksum" -}}
{{- $c := .Values.mesh.curve }}
{{- if $c.existingSecret.name }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $c.existingSecret.name | default dict }}
{{- printf "%s/%s/%s" $c.existingSecret.name $c.existingSecret.key (dig "data" $c.existingSecret.key "" $existing) | sha256sum }}
{{- else }}
{{- include "gamebackbone.curve.generatedData" . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Mode of files mounted from Secrets: owner root, readable by the pod's fsGroup (0440) when
podSecurityContext sets one (the default: 10001, the images' group); otherwise 0444, or the
non-root user could not read them. Only the container's own processes see the files.
*/}}
{{- define "gamebackbone.secretFileMode" -}}
{{- ternary 288 292 (hasKey .Values.podSecurityContext "fsGroup") }}
{{- end }}

{{/* Volumes and mounts of the Secrets both services read (CURVE key, Redis TLS). */}}
{{- define "gamebackbone.commonVolumeMounts" -}}
{{- if .Values.mesh.curve.enabled }}
- name: curve-key
  mountPath: /etc/gamebackbone/curve
  readOnly: true
{{- end }}
{{- if .Values.redis.tlsSecret.name }}
- name: redis-tls
  mountPath: /etc/gamebackbone/redis-tls
  readOnly: true
{{- end }}
{{- end }}

{{- define "gamebackbone.commonVolumes" -}}
{{- if .Values.mesh.curve.enabled }}
- name: curve-key
  secret:
    secretName: {{ include "gamebackbone.curve.secretName" . }}
    defaultMode: {{ include "gamebackbone.secretFileMode" . }}
    items:
      - key: {{ include "gamebackbone.curve.secretKey" . }}
        path: cluster.key
{{- end }}
{{- if .Values.redis.tlsSecret.name }}
- name: redis-tls
  secret:
    secretName: {{ .Values.redis.tlsSecret.name }}
    defaultMode: {{ include "gamebackbone.secretFileMode" . }}
    items:
      - key: ca.crt
        path: ca.crt
      {{- if .Values.redis.tlsSecret.clientCert }}
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      {{- end }}
{{- end }}
{{- end }}

{{/* Checks that the schema cannot express; fail with the values key to fix. */}}
{{- define "gamebackbone.validate" -}}
{{- $gs := .Values.gameserver }}
{{- $gw := .Values.gateway }}
{{- if eq (int $gs.ports.p2p) (int $gs.ports.mesh) }}
{{- fail "gameserver.ports.mesh must differ from gameserver.ports.p2p" }}
{{- end }}
{{- if eq (int $gw.ports.client) (int $gw.ports.metrics) }}
{{- fail "gateway.ports.metrics must differ from gateway.ports.client" }}
{{- end }}
{{- if or (eq (int $gs.ports.metrics) (int $gs.ports.p2p)) (eq (int $gs.ports.metrics) (int $gs.ports.mesh)) }}
{{- fail "gameserver.ports.metrics must differ from gameserver.ports.p2p and gameserver.ports.mesh" }}
{{- end }}
{{- if and .Values.redis.password .Values.redis.existingSecret.name }}
{{- fail "set either redis.password or redis.existingSecret.name, not both" }}
{{- end }}
{{- if and .Values.redis.username .Values.redis.existingSecret.name }}
{{- fail "redis.username is ignored with redis.existingSecret.name: put the user in the Secret's URL (redis://user:password@host:port/db)" }}
{{- end }}
{{- if and .Values.redis.tlsSecret.name (not .Values.redis.tls) (not .Values.redis.existingSecret.name) }}
{{- fail "redis.tlsSecret needs redis.tls=true (rediss://)" }}
{{- end }}
{{- if and .Values.redis.tlsSecret.clientCert (not .Values.redis.tlsSecret.name) }}
{{- fail "redis.tlsSecret.clientCert needs redis.tlsSecret.name" }}
{{- end }}
{{- if and $gw.tls.enabled (not $gw.tls.existingSecret) }}
{{- fail "gateway.tls.enabled needs gateway.tls.existingSecret (a kubernetes.io/tls Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and (not $gw.tls.plaintext) (not $gw.tls.enabled) }}
{{- fail "gateway.tls.plaintext=false needs gateway.tls.enabled: the Gateways would serve no client port" }}
{{- end }}
{{- if and $gw.tls.reloader (not $gw.tls.enabled) }}
{{- fail "gateway.tls.reloader needs gateway.tls.enabled" }}
{{- end }}
{{- if and $gw.tls.enabled (or (eq (int $gw.ports.tls) (int $gw.ports.client)) (eq (int $gw.ports.tls) (int $gw.ports.metrics))) }}
{{- fail "gateway.ports.tls must differ from gateway.ports.client and gateway.ports.metrics" }}
{{- end }}
{{- if and $gw.tls.enabled $gw.tls.plaintext (eq (int $gw.service.tlsPort) (int $gw.service.port)) }}
{{- fail "gateway.service.tlsPort must differ from gateway.service.port" }}
{{- end }}
{{- if and (eq $gs.auth.mode "hmac") (not $gs.auth.secret) (not $gs.auth.existingSecret.name) }}
{{- fail "gameserver.auth.mode=hmac needs gameserver.auth.secret or gameserver.auth.existingSecret.name" }}
{{- end }}
{{- if and $gs.auth.secret $gs.auth.existingSecret.name }}
{{- fail "set either gameserver.auth.secret or gameserver.auth.existingSecret.name, not both" }}
{{- end }}
{{- if and $gs.adminToken.value $gs.adminToken.existingSecret.name }}
{{- fail "set either gameserver.adminToken.value or gameserver.adminToken.existingSecret.name, not both" }}
{{- end }}
{{- if le (int (include "gamebackbone.gameserver.terminationGracePeriodSeconds" .)) (mul 2 (int $gs.drainTimeoutSeconds) | int) }}
{{- fail (printf "gameserver.terminationGracePeriodSeconds must exceed 2 x gameserver.drainTimeoutSeconds (%d): the GameServer would be killed mid-drain" (mul 2 (int $gs.drainTimeoutSeconds))) }}
{{- end }}
{{- if le (int (include "gamebackbone.gateway.terminationGracePeriodSeconds" .)) (add 2 (int $gw.drainGraceSeconds) | int) }}
{{- fail (printf "gateway.terminationGracePeriodSeconds must exceed gateway.drainGraceSeconds + 2 (%d)" (add 2 (int $gw.drainGraceSeconds))) }}
{{- end }}
{{- if and $gw.autoscaling.enabled (gt (int $gw.autoscaling.minReplicas) (int $gw.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas must not exceed gateway.autoscaling.maxReplicas" }}
{{- end }}
{{- range $component, $c := dict "gateway" $gw "gameserver" $gs }}
{{- $pdb := $c.podDisruptionBudget }}
{{- if and $pdb.enabled (eq (kindIs "invalid" $pdb.maxUnavailable) (kindIs "invalid" $pdb.minAvailable)) }}
{{- fail (printf "%s.podDisruptionBudget: set exactly one of maxUnavailable and minAvailable (the other null)" $component) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "gamebackbone.gameserver.terminationGracePeriodSeconds" -}}
{{- $gs := .Values.gameserver }}
{{- if kindIs "invalid" $gs.terminationGracePeriodSeconds }}
{{- add (mul 2 (int $gs.drainTimeoutSeconds)) 10 }}
{{- else }}
{{- int $gs.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- define "gamebackbone.gateway.terminationGracePeriodSeconds" -}}
{{- $gw := .Values.gateway }}
{{- if kindIs "invalid" $gw.terminationGracePeriodSeconds }}
{{- add (int $gw.drainGraceSeconds) 10 }}
{{- else }}
{{- int $gw.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Environment shared by both services. */}}
{{- define "gamebackbone.commonEnv" -}}
{{- if .Values.redis.existingSecret.name }}
- name: REDIS_CONNECTION
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret.name }}
      key: {{ .Values.redis.existingSecret.key }}
{{- else if .Values.redis.password }}
- name: REDIS_CONNECTION
  valueFrom:
    secretKeyRef:
      name: {{ include "gamebackbone.secretName" . }}
      key: redis-url
{{- else }}
- name: REDIS_CONNECTION
  value: {{ include "gamebackbone.redis.url" . | quote }}
{{- end }}
- name: REDIS_MODE
  value: {{ .Values.redis.mode | quote }}
{{- if eq .Values.redis.mode "sentinel" }}
- name: REDIS_SENTINEL_MASTER
  value: {{ .Values.redis.sentinel.masterName | quote }}
{{- end }}
- name: REDIS_KEY_PREFIX
  value: {{ .Values.redis.keyPrefix | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: MAX_FRAME_BYTES
  value: {{ .Values.maxFrameBytes | int64 | quote }}
{{- if .Values.mesh.curve.enabled }}
- name: CLUSTER_CURVE_SECRET_FILE
  value: /etc/gamebackbone/curve/cluster.key
{{- end }}
{{- if .Values.redis.tlsSecret.name }}
- name: REDIS_TLS_CA_FILE
  value: /etc/gamebackbone/redis-tls/ca.crt
{{- if .Values.redis.tlsSecret.clientCert }}
- name: REDIS_TLS_CERT_FILE
  value: /etc/gamebackbone/redis-tls/tls.crt
- name: REDIS_TLS_KEY_FILE
  value: /etc/gamebackbone/redis-tls/tls.key
{{- end }}
{{- end }}
{{- end }}

{{/* Extra NAME: value settings (keys checked by the schema). */}}
{{- define "gamebackbone.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ include "gamebackbone.envValue" $value | quote }}
{{- end }}
{{- end }}

{{/* A value as a service reads it: numbers from YAML are float64 in Helm; whole ones are
printed as integers (2097152, not 2.097152e+06), others in plain decimal. */}}
{{- define "gamebackbone.envValue" -}}
{{- if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . | toString }}{{ end }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{- define "gamebackbone.intOrString" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ int . }}{{ end }}
{{- end }}

{{/* Pod anti-affinity preset, unless affinity is given. */}}
{{- define "gamebackbone.affinity" -}}
{{- $root := index . 0 }}
{{- $c := index . 1 }}
{{- $selector := index . 2 }}
{{- if $c.affinity }}
affinity:
  {{- toYaml $c.affinity | nindent 2 }}
{{- else if eq $c.podAntiAffinity "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- $selector | nindent 14 }}
{{- else if eq $c.podAntiAffinity "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- $selector | nindent 12 }}
{{- end }}
{{- end }}

{{/* Probes on the metrics port. */}}
{{- define "gamebackbone.probes" -}}
{{- $c := . }}
readinessProbe:
  httpGet:
    path: /readyz
    port: metrics
  {{- toYaml $c.readinessProbe | nindent 2 }}
livenessProbe:
  httpGet:
    path: /healthz
    port: metrics
  {{- toYaml $c.livenessProbe | nindent 2 }}
{{- end }}

{{/*
checkov findings this chart accepts on purpose, with the reason (checkov reads
checkov.io/skipN annotations on the workload; the rest of checkov's Kubernetes checks pass).
*/}}
{{- define "gamebackbone.checkovSkips" -}}
checkov.io/skip1: "CKV_K8S_43=The tag is pinned to the chart appVersion; set gateway.image.digest / gameserver.image.digest to pull by digest"
checkov.io/skip2: "CKV_K8S_15=Pinned release tags do not move; IfNotPresent also works with images side-loaded into the nodes; set image.pullPolicy to Always for moving tags"
checkov.io/skip5: "CKV_K8S_35=The services take every setting from environment variables only; secret values reach them by secretKeyRef, never in clear in the manifest"
{{- end }}
