{{/* Chart name, cut to 63 characters (a DNS label). */}}
{{- define "apa.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: release-chart, unless the release name already holds it. */}}
{{- define "apa.fullname" -}}
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

{{- define "apa.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. */}}
{{- define "apa.labels" -}}
helm.sh/chart: {{ include "apa.chart" . }}
app.kubernetes.io/name: {{ include "apa.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "apa.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the API keys: the user's existing one or the chart's. */}}
{{- define "apa.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "apa.fullname" .)) .Values.apiKeys.existingSecret }}
{{- end }}

{{- define "apa.authEnabled" -}}
{{- if eq .Values.apiKeys.auth "required" }}true{{ end }}
{{- end }}

{{/*
The pod template of one Ray group.
Args (dict): root (the chart context), group (head or worker values), container (name),
head (true for the head), serve (true for the RayService's pods: only they get the API keys).
*/}}
{{- define "apa.podTemplate" -}}
{{- $root := .root }}
{{- $group := .group -}}
metadata:
  labels:
    {{- include "apa.labels" $root | nindent 4 }}
    {{- with $group.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $group.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: {{ .container }}
      image: {{ include "apa.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      securityContext:
        {{- toYaml $root.Values.securityContext | nindent 8 }}
      env:
        - name: HOME
          value: /tmp
        - name: APA_CACHE_DIR
          value: /cache
        - name: APA_LOG_FORMAT
          value: json
        {{- with $root.Values.common.mallocArenaMax }}
        - name: MALLOC_ARENA_MAX
          value: {{ . | quote }}
        {{- end }}
        {{- if not (kindIs "invalid" $root.Values.common.mimallocPurgeDelayMs) }}
        - name: MIMALLOC_PURGE_DELAY
          value: {{ $root.Values.common.mimallocPurgeDelayMs | quote }}
        {{- end }}
        {{- if .serve }}
        {{- if include "apa.authEnabled" $root }}
        - name: APA_SERVE_API_KEYS_FILE
          value: /etc/apa/api-keys/{{ $root.Values.apiKeys.secretKey }}
        {{- else }}
        - name: APA_SERVE_AUTH
          value: disabled
        {{- end }}
        {{- end }}
        {{- with $root.Values.common.containerEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- with $group.containerEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $root.Values.common.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if .head }}
      ports:
        - containerPort: 6379
          name: gcs-server
        - containerPort: 8265
          name: dashboard
        - containerPort: 10001
          name: client
        - containerPort: 8000
          name: serve
        - containerPort: 8080
          name: metrics
      {{- else }}
      ports:
        - containerPort: 8000
          name: serve
        - containerPort: 8080
          name: metrics
      {{- end }}
      resources:
        {{- toYaml $group.resources | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: cache
          mountPath: /cache
        {{- if and .serve (include "apa.authEnabled" $root) }}
        - name: api-keys
          mountPath: /etc/apa/api-keys
          readOnly: true
        {{- end }}
        {{- with $group.volumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.scratch.tmpSizeLimit }}
    - name: cache
      emptyDir:
        sizeLimit: {{ $root.Values.scratch.cacheSizeLimit }}
    {{- if and .serve (include "apa.authEnabled" $root) }}
    - name: api-keys
      secret:
        secretName: {{ include "apa.apiKeysSecret" $root }}
        defaultMode: 0440
    {{- end }}
    {{- with $group.volumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* One worker group spec. Args (dict): root, name, group, serve. */}}
{{- define "apa.workerGroup" -}}
- groupName: {{ .name }}
  replicas: {{ .group.replicas }}
  minReplicas: {{ .group.minReplicas }}
  maxReplicas: {{ .group.maxReplicas }}
  {{- with .group.rayStartParams }}
  rayStartParams:
    {{- toYaml . | nindent 4 }}
  {{- else }}
  rayStartParams: {}
  {{- end }}
  template:
    {{- include "apa.podTemplate" (dict "root" .root "group" .group "container" "ray-worker" "serve" .serve) | nindent 4 }}
{{- end }}

{{/*
The Ray cluster spec of the RayService and of each RayJob.
Args (dict): root (the chart context); serve (true for the RayService); workerGroups (a job's
own groups, keyed by name; empty: the chart's worker and additionalWorkerGroups).
*/}}
{{- define "apa.clusterSpec" -}}
{{- $root := .root }}
{{- $serve := .serve }}
{{- $named := dict }}
{{- if .workerGroups }}
{{- $named = .workerGroups }}
{{- else }}
{{- $named = $root.Values.additionalWorkerGroups }}
{{- end -}}
rayVersion: {{ $root.Values.rayVersion | quote }}
enableInTreeAutoscaling: {{ $root.Values.enableInTreeAutoscaling }}
headGroupSpec:
  {{- with $root.Values.head.rayStartParams }}
  rayStartParams:
    {{- toYaml . | nindent 4 }}
  {{- else }}
  rayStartParams: {}
  {{- end }}
  template:
    {{- include "apa.podTemplate" (dict "root" $root "group" $root.Values.head "container" "ray-head" "head" true "serve" $serve) | nindent 4 }}
{{- $groups := list }}
{{- if and (not .workerGroups) (not $root.Values.worker.disabled) }}
{{- $groups = append $groups (include "apa.workerGroup" (dict "root" $root "name" $root.Values.worker.groupName "group" $root.Values.worker "serve" $serve)) }}
{{- end }}
{{- range $name, $group := $named }}
{{- if not $group.disabled }}
{{- $groups = append $groups (include "apa.workerGroup" (dict "root" $root "name" $name "group" $group "serve" $serve)) }}
{{- end }}
{{- end }}
{{- if $groups }}
workerGroupSpecs:
{{- range $groups }}
{{ . }}
{{- end }}
{{- else }}
workerGroupSpecs: []
{{- end }}
{{- end }}

{{/*
A shell word: as is when it is plain, else single-quoted (a job's entrypoint is run by a shell).
*/}}
{{- define "apa.shellWord" -}}
{{- if regexMatch "^[-_./:=@%+,A-Za-z0-9]+$" . }}{{ . }}
{{- else }}'{{ replace "'" "'\\''" . }}'
{{- end }}
{{- end }}

{{/* A scalar value as a command-line word: whole numbers without an exponent. */}}
{{- define "apa.scalar" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}{{ int64 . }}
{{- else }}{{ toString . }}
{{- end }}
{{- end }}

{{/*
Command-line flags from a map of settings (a job's `args`), as a JSON list: each key becomes
--key-with-dashes VALUE; true/false become --key / --no-key; null and "" are left out (the
job's own default applies); a nested map (batchJob.args.scoring) adds its keys the same way.
*/}}
{{- define "apa.flags" -}}
{{- $args := list }}
{{- range $key, $value := . }}
{{- $flag := $key | replace "_" "-" }}
{{- if kindIs "map" $value }}
{{- $args = concat $args (include "apa.flags" $value | fromJsonArray) }}
{{- else if kindIs "bool" $value }}
{{- $args = append $args (printf "--%s%s" (ternary "" "no-" $value) $flag) }}
{{- else if kindIs "slice" $value }}
{{- fail (printf "%s: a list is not a command-line flag value" $key) }}
{{- else if and (not (kindIs "invalid" $value)) (ne (toString $value) "") }}
{{- $args = concat $args (list (printf "--%s" $flag) (include "apa.scalar" $value)) }}
{{- end }}
{{- end }}
{{- toJson $args }}
{{- end }}

{{/* A job's entrypoint from a list of words. */}}
{{- define "apa.entrypoint" -}}
{{- $words := list }}
{{- range . }}
{{- $words = append $words (include "apa.shellWord" .) }}
{{- end }}
{{- join " " $words | toJson }}
{{- end }}

{{/*
The RayJob fields every job shares. Args (dict): root, job (batchJob or finetuneJob values).
*/}}
{{- define "apa.jobSpec" -}}
shutdownAfterJobFinishes: {{ .job.shutdownAfterJobFinishes }}
ttlSecondsAfterFinished: {{ .job.ttlSecondsAfterFinished }}
activeDeadlineSeconds: {{ .job.activeDeadlineSeconds }}
backoffLimit: {{ .job.backoffLimit }}
rayClusterSpec:
  {{- include "apa.clusterSpec" (dict "root" .root "workerGroups" .job.workerGroups) | nindent 2 }}
{{- end }}
