{{- define "promlink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "promlink.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "promlink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "promlink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "promlink.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "promlink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "promlink.serviceAccountName" -}}
{{- if eq .Values.mode "sidecar" -}}
{{- .Values.sidecar.prometheusServiceAccountName -}}
{{- else if .Values.serviceAccount.create -}}
{{- default (include "promlink.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, repository@digest, or repository:tag@digest when both are given. */}}
{{- define "promlink.image" -}}
{{- $i := .Values.image -}}
{{- if $i.digest -}}
{{- if $i.tag -}}{{ printf "%s:%s@%s" $i.repository $i.tag $i.digest }}{{- else -}}{{ printf "%s@%s" $i.repository $i.digest }}{{- end -}}
{{- else -}}
{{- printf "%s:%s" $i.repository (default .Chart.AppVersion $i.tag) -}}
{{- end -}}
{{- end -}}

{{/* promlink's shutdown_grace in seconds: the value, or 60 (memory queue) / 30 (disk queue). */}}
{{- define "promlink.shutdownGraceSeconds" -}}
{{- if kindIs "invalid" .Values.shutdownGraceSeconds -}}
{{- ternary 30 60 (and (eq .Values.mode "gateway") .Values.queue.durable) -}}
{{- else -}}
{{- int .Values.shutdownGraceSeconds -}}
{{- end -}}
{{- end -}}

{{/* Kubernetes' terminationGracePeriodSeconds: promlink's grace plus the margin. */}}
{{- define "promlink.terminationGracePeriodSeconds" -}}
{{- add (include "promlink.shutdownGraceSeconds" . | int) (int .Values.terminationGraceMarginSeconds) -}}
{{- end -}}

{{/* serve's shutdown flags (also taken by the sidecar). */}}
{{- define "promlink.shutdownArgs" -}}
- --shutdown-grace
- {{ printf "%ss" (include "promlink.shutdownGraceSeconds" .) }}
{{- if not (kindIs "invalid" .Values.shutdownQuietPeriodSeconds) }}
- --shutdown-quiet-period
- {{ printf "%ds" (int .Values.shutdownQuietPeriodSeconds) }}
{{- end }}
{{- end -}}

{{- define "promlink.certDir" -}}/etc/promlink/entra{{- end -}}

{{/* promlink's YAML file, from the ConfigMap templates/config.yaml renders (the values only
     YAML can hold: relabel, routes). */}}
{{- define "promlink.configFile" -}}/etc/promlink/config/promlink.yaml{{- end -}}

{{/* Arguments after the subcommand: identity, certificate, queue directory, extra args. */}}
{{- define "promlink.identityArgs" -}}
- --identity
- {{ .Values.azure.identity }}
{{- if eq .Values.azure.identity "client-certificate" }}
- --client-certificate-path
- {{ printf "%s/%s" (include "promlink.certDir" .) .Values.azure.clientCertificate.key }}
{{- end }}
{{- end -}}

{{/* Environment shared by the workload, the sidecar and doctor. */}}
{{- define "promlink.env" -}}
{{- with .Values.azure.ingestionUrl }}
- name: PROMLINK_INGESTION_URL
  value: {{ . | quote }}
{{- end }}
{{- if or .Values.relabel .Values.routes }}
- name: PROMLINK_CONFIG
  value: {{ include "promlink.configFile" . }}
{{- end }}
{{- with .Values.azure.cloud }}
- name: PROMLINK_CLOUD
  value: {{ . | quote }}
{{- end }}
{{- with .Values.azure.tenantId }}
- name: PROMLINK_TENANT_ID
  value: {{ . | quote }}
{{- end }}
{{- with .Values.azure.clientId }}
- name: PROMLINK_CLIENT_ID
  value: {{ . | quote }}
{{- end }}
{{- if eq .Values.azure.identity "client-secret" }}
- name: PROMLINK_CLIENT_SECRET_FILE
  value: {{ printf "%s/%s" (include "promlink.certDir" .) .Values.azure.clientSecret.key | quote }}
{{- end }}
{{- with .Values.azure.cluster }}
- name: PROMLINK_CLUSTER
  value: {{ . | quote }}
{{- end }}
{{- with .Values.privateLink.mode }}
- name: PROMLINK_PRIVATE_LINK
  value: {{ . | quote }}
{{- end }}
{{- with .Values.privateLink.expectedEndpointIps }}
- name: PROMLINK_EXPECTED_ENDPOINT_IP
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.privateLink.dnsServers }}
- name: PROMLINK_DNS_SERVER
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.privateLink.privateCidrs }}
- name: PROMLINK_PRIVATE_CIDR
  value: {{ join "," . | quote }}
{{- end }}
{{- with .Values.alertmanagerUrl }}
- name: PROMLINK_ALERTMANAGER_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.canary.queryUrl }}
- name: PROMLINK_QUERY_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.canary.interval }}
- name: PROMLINK_CANARY_INTERVAL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.canary.timeout }}
- name: PROMLINK_CANARY_TIMEOUT
  value: {{ . | quote }}
{{- end }}
{{- with .Values.canary.queryPrivateLink }}
- name: PROMLINK_QUERY_PRIVATE_LINK
  value: {{ . | quote }}
{{- end }}
{{- $replicas := ternary .Values.autoscaling.maxReplicas .Values.replicaCount .Values.autoscaling.enabled }}
{{- $share := ternary (max 1 (int $replicas)) 1 (eq .Values.mode "gateway") }}
{{- $limits := .Values.workspaceLimits }}
- name: PROMLINK_WORKSPACE_ACTIVE_SERIES_LIMIT
  value: {{ max 1 (div (int64 ($limits.activeSeries | default 1000000)) $share) | quote }}
- name: PROMLINK_WORKSPACE_EVENTS_PER_MINUTE_LIMIT
  value: {{ max 1 (div (int64 ($limits.eventsPerMinute | default 1000000)) $share) | quote }}
- name: PROMLINK_DCR_REQUESTS_PER_MINUTE_LIMIT
  value: {{ max 1 (div (int64 ($limits.dcrRequestsPerMinute | default 15000)) $share) | quote }}
{{- if .Values.readyRequiresUpstream }}
- name: PROMLINK_READY_REQUIRES_UPSTREAM
  value: "true"
{{- end }}
- name: PROMLINK_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- with .Values.logLevel }}
- name: PROMLINK_LOG_LEVEL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes holding the Entra credential, if any. */}}
{{- define "promlink.credentialSecret" -}}
{{- if eq .Values.azure.identity "client-certificate" -}}
{{- .Values.azure.clientCertificate.secretName -}}
{{- else if eq .Values.azure.identity "client-secret" -}}
{{- .Values.azure.clientSecret.secretName -}}
{{- end -}}
{{- end -}}

{{/* Mounts every promlink container has: the Entra credential (if any) and extraVolumeMounts. */}}
{{- define "promlink.commonVolumeMounts" -}}
{{- if or .Values.relabel .Values.routes }}
- name: config
  mountPath: /etc/promlink/config
  readOnly: true
{{- end }}
{{- if include "promlink.credentialSecret" . }}
- name: entra-credential
  mountPath: {{ include "promlink.certDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Secret volumes are mounted 0440 (group-readable through fsGroup): promlink warns about
     world-readable secret files. */}}
{{- define "promlink.commonVolumes" -}}
{{- if or .Values.relabel .Values.routes }}
- name: config
  configMap:
    name: {{ include "promlink.fullname" . }}-config
{{- end }}
{{- with include "promlink.credentialSecret" . }}
- name: entra-credential
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Gateway receiver: TLS files, client CA and sender tokens, mounted from Secrets. */}}
{{- define "promlink.inboundEnv" -}}
{{- $in := .Values.inbound }}
{{- if $in.tls.secretName }}
- name: PROMLINK_TLS_CERT
  value: /etc/promlink/tls/tls.crt
- name: PROMLINK_TLS_KEY
  value: /etc/promlink/tls/tls.key
{{- end }}
{{- if $in.tls.clientCaSecretName }}
- name: PROMLINK_CLIENT_CA
  value: {{ printf "/etc/promlink/client-ca/%s" $in.tls.clientCaKey | quote }}
{{- with $in.tls.allowedClientNames }}
- name: PROMLINK_CLIENT_ALLOWED_NAME
  value: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- if $in.bearerTokens.secretName }}
- name: PROMLINK_BEARER_TOKEN_FILE
  value: {{ printf "/etc/promlink/senders/%s" $in.bearerTokens.key | quote }}
{{- end }}
{{- if $in.allowInsecureAuth }}
- name: PROMLINK_ALLOW_INSECURE_AUTH
  value: "true"
{{- end }}
{{- end -}}

{{- define "promlink.inboundVolumeMounts" -}}
{{- $in := .Values.inbound }}
{{- if $in.tls.secretName }}
- name: inbound-tls
  mountPath: /etc/promlink/tls
  readOnly: true
{{- end }}
{{- if $in.tls.clientCaSecretName }}
- name: client-ca
  mountPath: /etc/promlink/client-ca
  readOnly: true
{{- end }}
{{- if $in.bearerTokens.secretName }}
- name: sender-tokens
  mountPath: /etc/promlink/senders
  readOnly: true
{{- end }}
{{- end -}}

{{- define "promlink.inboundVolumes" -}}
{{- $in := .Values.inbound }}
{{- if $in.tls.secretName }}
- name: inbound-tls
  secret:
    secretName: {{ $in.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if $in.tls.clientCaSecretName }}
- name: client-ca
  secret:
    secretName: {{ $in.tls.clientCaSecretName }}
    defaultMode: 0444
{{- end }}
{{- if $in.bearerTokens.secretName }}
- name: sender-tokens
  secret:
    secretName: {{ $in.bearerTokens.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/* Probes of the serving container: startup and liveness on /health, readiness on /ready
     ("accepting writes"). Argument: dict "root" $ "port" <name> "https" <bool>. */}}
{{- define "promlink.probes" -}}
{{- $p := .root.Values.probes -}}
{{- $get := dict "port" .port -}}
{{- if .https }}{{ $_ := set $get "scheme" "HTTPS" }}{{ end -}}
startupProbe:
  httpGet:
    {{- toYaml (merge (dict "path" "/health") $get) | nindent 4 }}
  {{- toYaml $p.startupProbe | nindent 2 }}
livenessProbe:
  httpGet:
    {{- toYaml (merge (dict "path" "/health") $get) | nindent 4 }}
  {{- toYaml $p.livenessProbe | nindent 2 }}
{{- if $p.readiness }}
readinessProbe:
  httpGet:
    {{- toYaml (merge (dict "path" "/ready") $get) | nindent 4 }}
  {{- toYaml $p.readinessProbe | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The promlink container of the sidecar snippet: prometheusSpec.initContainers (native
     sidecar, restartPolicy Always) or prometheusSpec.containers. */}}
{{- define "promlink.sidecarContainer" -}}
name: {{ .Values.sidecar.containerName }}
image: {{ include "promlink.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- if .Values.sidecar.native }}
restartPolicy: Always
{{- end }}
args:
- serve
{{ include "promlink.identityArgs" . }}
{{ include "promlink.shutdownArgs" . }}
{{- with .Values.extraArgs }}
{{ toYaml . }}
{{- end }}
env:
- name: PROMLINK_LISTEN
  value: {{ printf "0.0.0.0:%d" (int .Values.sidecar.port) | quote }}
{{ include "promlink.env" . }}
ports:
- name: rw-port
  containerPort: {{ .Values.sidecar.port }}
  protocol: TCP
{{ include "promlink.probes" (dict "root" . "port" "rw-port") }}
resources:
{{ toYaml .Values.sidecar.resources | indent 2 }}
securityContext:
{{ toYaml .Values.securityContext | indent 2 }}
{{- with include "promlink.commonVolumeMounts" . }}
volumeMounts:
{{- . }}
{{- end }}
{{- end -}}

{{/* The kube-prometheus-stack values snippet for sidecar mode. Helm replaces lists wholesale
     when merging values files: initContainers/containers, remoteWrite and volumes here replace
     the ones in the release's values (docs/deployment.md). */}}
{{- define "promlink.sidecarValues" -}}
prometheus:
{{- if eq .Values.azure.identity "workload" }}
  serviceAccount:
    annotations:
      azure.workload.identity/client-id: {{ .Values.azure.clientId | quote }}
{{- end }}
  prometheusSpec:
{{- if eq .Values.azure.identity "workload" }}
    podMetadata:
      labels:
        azure.workload.identity/use: "true"
{{- end }}
    remoteWrite:
    - url: {{ printf "http://localhost:%d/api/v1/write" (int .Values.sidecar.port) }}
    {{ ternary "initContainers" "containers" .Values.sidecar.native }}:
    - {{ include "promlink.sidecarContainer" . | indent 6 | trim }}
{{- with include "promlink.commonVolumes" . }}
    volumes:
{{- . | indent 4 }}
{{- end }}
{{- end -}}

{{/* Pod spec of doctor (test hook Pod or Job template). */}}
{{- define "promlink.doctorPodSpec" -}}
restartPolicy: Never
serviceAccountName: {{ include "promlink.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{ toYaml . }}
{{- end }}
securityContext:
{{ toYaml .Values.podSecurityContext | indent 2 }}
containers:
- name: doctor
  image: {{ include "promlink.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
  - doctor
  - --output
  - json
  {{- include "promlink.identityArgs" . | nindent 2 }}
  {{- with .Values.doctor.clusterRegion }}
  - --cluster-region
  - {{ . }}
  {{- end }}
  {{- with .Values.doctor.workspaceId }}
  - --workspace-id
  - {{ . }}
  {{- end }}
  {{- if .Values.doctor.writeCanary }}
  - --write-canary
  {{- end }}
  env:
  {{- include "promlink.env" . | nindent 2 }}
  resources:
{{ toYaml .Values.doctor.resources | indent 4 }}
  securityContext:
{{ toYaml .Values.securityContext | indent 4 }}
  {{- with include "promlink.commonVolumeMounts" . }}
  volumeMounts:
  {{- . | indent 2 }}
  {{- end }}
{{- with include "promlink.commonVolumes" . }}
volumes:
{{- . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
{{ toYaml . | indent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
{{ toYaml . }}
{{- end }}
{{- end -}}
