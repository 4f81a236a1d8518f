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

{{- define "promlink.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "promlink.certDir" -}}/etc/promlink/entra{{- end -}}

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
- name: PROMLINK_INGESTION_URL
  value: {{ .Values.azure.ingestionUrl | quote }}
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
{{- with .Values.privateLink.expectedEndpointIPs }}
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

{{- define "promlink.credentialVolumeMounts" -}}
{{- if include "promlink.credentialSecret" . }}
- name: entra-credential
  mountPath: {{ include "promlink.certDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{- define "promlink.credentialVolumes" -}}
{{- with include "promlink.credentialSecret" . }}
- name: entra-credential
  secret:
    secretName: {{ . }}
    defaultMode: 0440
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
{{- if $in.tls.clientCASecretName }}
- name: PROMLINK_CLIENT_CA
  value: {{ printf "/etc/promlink/client-ca/%s" $in.tls.clientCAKey | quote }}
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
{{- if $in.tls.clientCASecretName }}
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

{{/* Secret volumes are mounted 0440 (group-readable through fsGroup): promlink warns about
     world-readable secret files. */}}
{{- define "promlink.inboundVolumes" -}}
{{- $in := .Values.inbound }}
{{- if $in.tls.secretName }}
- name: inbound-tls
  secret:
    secretName: {{ $in.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if $in.tls.clientCASecretName }}
- name: client-ca
  secret:
    secretName: {{ $in.tls.clientCASecretName }}
    defaultMode: 0444
{{- end }}
{{- if $in.bearerTokens.secretName }}
- name: sender-tokens
  secret:
    secretName: {{ $in.bearerTokens.secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{- define "promlink.probes" -}}
livenessProbe:
  httpGet:
    path: /health
    port: {{ .port }}
    {{- if .https }}
    scheme: HTTPS
    {{- end }}
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- if .readiness }}
readinessProbe:
  httpGet:
    path: /ready
    port: {{ .port }}
    {{- if .https }}
    scheme: HTTPS
    {{- end }}
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 5
  failureThreshold: 3
{{- end }}
{{- end -}}

{{/* The promlink container of the sidecar snippet (kube-prometheus-stack prometheusSpec.containers). */}}
{{- define "promlink.sidecarContainer" -}}
name: {{ .Values.sidecar.containerName }}
image: {{ include "promlink.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
- serve
{{ include "promlink.identityArgs" . }}
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
{{ include "promlink.probes" (dict "port" "rw-port" "readiness" .Values.probes.readiness) }}
resources:
{{ toYaml .Values.sidecar.resources | indent 2 }}
securityContext:
{{ toYaml .Values.securityContext | indent 2 }}
{{- with include "promlink.credentialVolumeMounts" . }}
volumeMounts:
{{- . }}
{{- end }}
{{- end -}}

{{/* The kube-prometheus-stack values snippet for sidecar mode. */}}
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
    containers:
    - {{ include "promlink.sidecarContainer" . | indent 6 | trim }}
{{- with include "promlink.credentialVolumes" . }}
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
    requests:
      cpu: 50m
      memory: 64Mi
    limits:
      cpu: 500m
      memory: 128Mi
  securityContext:
{{ toYaml .Values.securityContext | indent 4 }}
  {{- with include "promlink.credentialVolumeMounts" . }}
  volumeMounts:
  {{- . | indent 2 }}
  {{- end }}
{{- with include "promlink.credentialVolumes" . }}
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
