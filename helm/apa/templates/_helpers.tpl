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
Args (dict): root (the chart context), group (head or worker values), container (name).
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
        {{- if include "apa.authEnabled" $root }}
        - name: APA_SERVE_API_KEYS_FILE
          value: /etc/apa/api-keys/{{ $root.Values.apiKeys.secretKey }}
        {{- else }}
        - name: APA_SERVE_AUTH
          value: disabled
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
        {{- if include "apa.authEnabled" $root }}
        - name: api-keys
          mountPath: /etc/apa/api-keys
          readOnly: true
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.scratch.tmpSizeLimit }}
    - name: cache
      emptyDir:
        sizeLimit: {{ $root.Values.scratch.cacheSizeLimit }}
    {{- if include "apa.authEnabled" $root }}
    - name: api-keys
      secret:
        secretName: {{ include "apa.apiKeysSecret" $root }}
        defaultMode: 0440
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

{{/* One worker group spec. Args (dict): root, name, group. */}}
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
    {{- include "apa.podTemplate" (dict "root" .root "group" .group "container" "ray-worker") | nindent 4 }}
{{- end }}

{{/* The Ray cluster spec shared by the RayService and the batch RayJob. */}}
{{- define "apa.clusterSpec" -}}
rayVersion: {{ .Values.rayVersion | quote }}
enableInTreeAutoscaling: {{ .Values.enableInTreeAutoscaling }}
headGroupSpec:
  {{- with .Values.head.rayStartParams }}
  rayStartParams:
    {{- toYaml . | nindent 4 }}
  {{- else }}
  rayStartParams: {}
  {{- end }}
  template:
    {{- include "apa.podTemplate" (dict "root" . "group" .Values.head "container" "ray-head" "head" true) | nindent 4 }}
{{- $groups := list }}
{{- if not .Values.worker.disabled }}
{{- $groups = append $groups (include "apa.workerGroup" (dict "root" . "name" .Values.worker.groupName "group" .Values.worker)) }}
{{- end }}
{{- range $name, $group := .Values.additionalWorkerGroups }}
{{- if not $group.disabled }}
{{- $groups = append $groups (include "apa.workerGroup" (dict "root" $ "name" $name "group" $group)) }}
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
