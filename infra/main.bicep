// The co-sell connector in Azure: a Python 3.11 Function App on Linux (Flex Consumption by default), its
// storage account (host storage, the connector's tables and queues, the Flex deployment container),
// Application Insights on a Log Analytics workspace, and a Key Vault (RBAC) for the Partner Center and
// Salesforce secrets. The app reaches storage and the vault with its system-assigned managed identity:
// no storage key in any app setting where the platform allows it, no secret value in any app setting.
//
// Deploy: az deployment group create -g <rg> -f infra/main.bicep -p infra/main.parameters.json
// (infra/README.md has the whole procedure, the secrets step and the rollback note.)

// An app setting whose value is read from Key Vault by the platform. No version in the URI: the app
// always gets the newest one (the refresh-token rotation writes new versions).
func keyVaultReference(vaultUri string, secretName string) string => '@Microsoft.KeyVault(SecretUri=${vaultUri}secrets/${secretName}/)'

// ---------------------------------------------------------------------------------------------------
// Where and what
// ---------------------------------------------------------------------------------------------------

@description('Region of every resource. Flex Consumption is not offered everywhere: `az functionapp list-flexconsumption-locations`.')
param location string = resourceGroup().location

@description('Function App name: also the host name <name>.azurewebsites.net, so it must be globally unique.')
@minLength(2)
@maxLength(60)
param appName string = 'cosell-${uniqueString(resourceGroup().id)}'

@description('Hosting plan. FlexConsumption: serverless, identity-only storage. Premium: always-warm instances (EP1-EP3). Consumption: the classic Linux plan, retired on 30 September 2028.')
@allowed([
  'FlexConsumption'
  'Premium'
  'Consumption'
])
param planType string = 'FlexConsumption'

@description('Premium plan size (planType Premium only).')
@allowed([
  'EP1'
  'EP2'
  'EP3'
])
param premiumSku string = 'EP1'

@description('Flex Consumption: most instances the app scales out to (every instance spends Salesforce API calls).')
@minValue(1)
@maxValue(1000)
param flexMaximumInstanceCount int = 40

@description('Flex Consumption: memory of each instance.')
@allowed([
  512
  2048
  4096
])
param flexInstanceMemoryMB int = 2048

@description('Storage account name (3-24 lower-case letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param storageAccountName string = 'st${uniqueString(resourceGroup().id, appName)}'

@description('Key Vault name (3-24 characters, globally unique; a deleted vault keeps its name until purged).')
@minLength(3)
@maxLength(24)
param keyVaultName string = 'kv-${uniqueString(resourceGroup().id, appName)}'

@description('Purge protection on the vault: a deleted secret or vault can then be recovered but not purged early. It cannot be turned off again.')
param keyVaultPurgeProtection bool = true

@description('Days Log Analytics keeps the telemetry (traces, requests, the connector\'s sync logs).')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Let the Python worker send its logs to Application Insights itself (OpenTelemetry), so the custom dimensions of the connector\'s logs arrive as customDimensions. Needs azure-monitor-opentelemetry in requirements.txt.')
param workerOpenTelemetry bool = true

@description('Email address the Azure Monitor alerts go to (dead letters, token refused or expiring, no successful poll/reconcile, no run at all for a day, receiver 5xx; infra/alerts/). Empty: they show in the portal only.')
param alertEmail string = ''

// ---------------------------------------------------------------------------------------------------
// Partner Center
// ---------------------------------------------------------------------------------------------------

@description('Partner Center (Microsoft Entra) tenant id.')
param partnerCenterTenantId string = ''

@description('Client id of the Entra app of the Secure Application Model.')
param partnerCenterClientId string = ''

param partnerCenterApiUrl string = 'https://api.partner.microsoft.com/v1.0/engagements'
param partnerCenterWebhooksUrl string = 'https://api.partnercenter.microsoft.com/webhooks/v1'
param partnerCenterAuthority string = 'https://login.microsoftonline.com'

@description('Comma-separated hosts a webhook signing certificate may be downloaded from.')
param partnerCenterWebhookCertHosts string = '*.blob.core.windows.net'

// ---------------------------------------------------------------------------------------------------
// Salesforce
// ---------------------------------------------------------------------------------------------------

@description('https://login.salesforce.com (production), https://test.salesforce.com (sandbox orgs) or the org\'s My Domain URL.')
param salesforceLoginUrl string = 'https://login.salesforce.com'

@description('The integration user (JWT bearer and password flows).')
param salesforceUsername string = ''

@description('Consumer key of the External Client App / connected app.')
param salesforceClientId string = ''

param salesforceApiVersion string = '64.0'

@description('The org whose Outbound Messages are accepted (00D...). Set when the org pushes changes (salesforce/README.md); the poll then defaults to every 15 minutes. `python -m shared doctor` shows it.')
param salesforceOrgId string = ''

// ---------------------------------------------------------------------------------------------------
// The connector
// ---------------------------------------------------------------------------------------------------

param mappingFile string = 'mappings/salesforce.json'

@description('NCRONTAB (6 fields, seconds first) of the Salesforce change poll. Empty: every minute, or every 15 minutes when salesforceOrgId is set (push delivers; the poll is the safety net).')
param salesforcePollSchedule string = ''

@description('Look-back of each Salesforce poll, in seconds: rows committed this late with an earlier SystemModstamp are still seen.')
@minValue(0)
param salesforcePollOverlapSeconds int = 300

@description('NCRONTAB of the Partner Center reconcile that catches lost webhooks.')
param partnerCenterReconcileSchedule string = '0 */15 * * * *'

@description('true: read both sides and log what would change, write nothing. A safe first run.')
param dryRun bool = false

@description('Base URL Partner Center reaches the app at; empty means https://<default host name>.')
param publicUrl string = ''

@description('Comma-separated URLs that get every verified Partner Center event relayed unchanged.')
param webhookForwardUrls string = ''

@description('Client-side ceiling on Partner Center calls per second (a decimal number, as text).')
param partnerCenterRateLimit string = '10'

@description('Stop non-urgent Salesforce work above this share of the org\'s daily API limit (0-1, as text).')
param salesforceBudgetShare string = '0.8'

@minValue(1)
param maxAttempts int = 5

// ---------------------------------------------------------------------------------------------------
// Secrets: written to Key Vault only when given. Give them on the first deployment (or set them with
// `az keyvault secret set`) and leave them out afterwards: a later deployment then never overwrites the
// refresh token that the connector has rotated since.
// ---------------------------------------------------------------------------------------------------

@secure()
param partnerCenterClientSecret string = ''
@secure()
param partnerCenterRefreshToken string = ''
@secure()
param salesforcePrivateKey string = ''
@secure()
param salesforceClientSecret string = ''
@secure()
param salesforcePassword string = ''
@secure()
param salesforceSecurityToken string = ''

@description('A host function key of this app (`az functionapp keys list`), for the ?code= of the webhook URL Partner Center calls. Known only after the first deployment.')
@secure()
param webhookFunctionKey string = ''

@description('true when the refresh-token secret already exists in the vault (set by hand or by an earlier deployment), so the rotation write-back role can be scoped to it without passing the token again.')
param refreshTokenSecretExists bool = false

@description('Object id of a person or group who may set the vault\'s secrets by hand (`az keyvault secret set`): Key Vault Secrets Officer on the vault. Empty: nobody; secrets then come through deployment parameters only.')
param secretsOperatorPrincipalId string = ''

// ---------------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------------

var isFlex = planType == 'FlexConsumption'
var isConsumption = planType == 'Consumption'
var tags = {
  application: 'cosell-connector'
}
var deploymentContainerName = 'app-package-${take(toLower(appName), 40)}'
// The queues the connector and its queue triggers use (shared/store/queues.py); poison queues are made
// by the Functions host. Tables are created by the connector on first use.
var connectorQueues = [
  'referral-changes'
  'opportunity-changes'
  'webhook-forward'
]
// Key Vault secret names: the setting's name in lower case with `_` as `-` (shared/keyvault.py maps
// names the same way, so the rotation write-back lands on the secret the app setting references).
var secretNames = {
  partnerCenterClientSecret: 'partner-center-client-secret'
  partnerCenterRefreshToken: 'partner-center-refresh-token'
  salesforcePrivateKey: 'salesforce-private-key'
  salesforceClientSecret: 'salesforce-client-secret'
  salesforcePassword: 'salesforce-password'
  salesforceSecurityToken: 'salesforce-security-token'
  webhookFunctionKey: 'cosell-webhook-function-key'
}

// ---------------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------------

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    workspaceName: 'log-${appName}'
    appInsightsName: 'appi-${appName}'
    retentionInDays: logRetentionDays
    alertEmail: alertEmail
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    // Flex Consumption needs no key anywhere. Premium and Consumption keep their code on an Azure Files
    // content share, which the platform mounts only with an account key.
    allowSharedKeyAccess: !isFlex
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// Flex Consumption runs the package that `func azure functionapp publish` uploads here.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = if (isFlex) {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queue in connectorQueues: {
  parent: queueService
  name: queue
}]

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
    purgeProtection: keyVaultPurgeProtection
    partnerCenterClientSecretName: secretNames.partnerCenterClientSecret
    partnerCenterClientSecret: partnerCenterClientSecret
    partnerCenterRefreshTokenName: secretNames.partnerCenterRefreshToken
    partnerCenterRefreshToken: partnerCenterRefreshToken
    salesforcePrivateKeyName: secretNames.salesforcePrivateKey
    salesforcePrivateKey: salesforcePrivateKey
    salesforceClientSecretName: secretNames.salesforceClientSecret
    salesforceClientSecret: salesforceClientSecret
    salesforcePasswordName: secretNames.salesforcePassword
    salesforcePassword: salesforcePassword
    salesforceSecurityTokenName: secretNames.salesforceSecurityToken
    salesforceSecurityToken: salesforceSecurityToken
    webhookFunctionKeyName: secretNames.webhookFunctionKey
    webhookFunctionKey: webhookFunctionKey
  }
}

// ---------------------------------------------------------------------------------------------------
// App settings. Every setting the code reads (shared/settings.py) is here; tests/test_infra.py checks.
// ---------------------------------------------------------------------------------------------------

// The Functions host's own storage (triggers, timers' locks, keys): identity-based where the platform
// allows it. Linux Consumption publishes code as a blob with a SAS URL made from this connection string,
// so there (only) it must be a key-based connection string.
var hostStorageSettings = isConsumption ? {
  AzureWebJobsStorage: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
} : {
  AzureWebJobsStorage__accountName: storage.name
}

// Flex Consumption takes the runtime from functionAppConfig and refuses these settings; the other plans
// need them, plus the Azure Files share that holds the code (key-based: Azure Files offers no identity
// connection for it). On those plans every function shares an instance's Python worker, whose pool of
// threads is min(32, CPUs + 4) by default: 5 or 6 on a small instance. The syncs mostly wait on Partner
// Center and Salesforce, and Salesforce's outbound-message acks waited behind them ("Improve throughput
// performance of Python apps": raise PYTHON_THREADPOOL_THREAD_COUNT for I/O-bound work). Flex scales HTTP
// functions on instances of their own, apart from the queue functions.
var planSettings = isFlex ? {} : {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'python'
  PYTHON_THREADPOOL_THREAD_COUNT: '16'
  WEBSITE_CONTENTAZUREFILECONNECTIONSTRING: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
  WEBSITE_CONTENTSHARE: take(toLower(appName), 63)
}

var telemetrySettings = union({
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
}, workerOpenTelemetry ? {
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
} : {})

// The connector's tables and queues, and its queue triggers (connection "COSELL_STORAGE"): reached with
// the managed identity through the Functions runtime's identity-based connection settings.
var connectorStorageSettings = {
  COSELL_STORAGE__accountName: storage.name
  COSELL_STORAGE__tableServiceUri: storage.properties.primaryEndpoints.table
  COSELL_STORAGE__queueServiceUri: storage.properties.primaryEndpoints.queue
}

// Secrets are Key Vault references. A reference to a secret that is not set (the Salesforce secrets of
// the sign-in flows not used) reaches the code as its own text, which shared/settings.py reads as unset.
// PARTNER_CENTER_REFRESH_TOKEN is deliberately absent: with COSELL_KEYVAULT_URL the connector reads the
// newest refresh token from the vault itself and writes each rotated one back; an app setting would be a
// copy resolved at start-up that the next rotation makes stale.
var partnerCenterSettings = {
  PARTNER_CENTER_TENANT_ID: partnerCenterTenantId
  PARTNER_CENTER_CLIENT_ID: partnerCenterClientId
  PARTNER_CENTER_CLIENT_SECRET: keyVaultReference(keyVault.outputs.uri, secretNames.partnerCenterClientSecret)
  PARTNER_CENTER_API_URL: partnerCenterApiUrl
  PARTNER_CENTER_WEBHOOKS_URL: partnerCenterWebhooksUrl
  PARTNER_CENTER_AUTHORITY: partnerCenterAuthority
  PARTNER_CENTER_WEBHOOK_CERT_HOSTS: partnerCenterWebhookCertHosts
}

// The connector picks the Salesforce sign-in flow from the secrets that are set: JWT bearer (private
// key), else client credentials (client secret), else password + security token.
var salesforceSettings = {
  SALESFORCE_LOGIN_URL: salesforceLoginUrl
  SALESFORCE_USERNAME: salesforceUsername
  SALESFORCE_CLIENT_ID: salesforceClientId
  SALESFORCE_API_VERSION: salesforceApiVersion
  SALESFORCE_ORG_ID: salesforceOrgId
  SALESFORCE_PRIVATE_KEY: keyVaultReference(keyVault.outputs.uri, secretNames.salesforcePrivateKey)
  SALESFORCE_CLIENT_SECRET: keyVaultReference(keyVault.outputs.uri, secretNames.salesforceClientSecret)
  SALESFORCE_PASSWORD: keyVaultReference(keyVault.outputs.uri, secretNames.salesforcePassword)
  SALESFORCE_SECURITY_TOKEN: keyVaultReference(keyVault.outputs.uri, secretNames.salesforceSecurityToken)
}

var publicBaseUrl = empty(publicUrl) ? 'https://${functionApp.outputs.defaultHostName}' : publicUrl

var connectorSettings = {
  COSELL_KEYVAULT_URL: keyVault.outputs.uri
  COSELL_MAPPING_FILE: mappingFile
  COSELL_SF_POLL_SCHEDULE: !empty(salesforcePollSchedule) ? salesforcePollSchedule : (empty(salesforceOrgId) ? '0 */1 * * * *' : '0 */15 * * * *')
  COSELL_SF_POLL_OVERLAP_SECONDS: string(salesforcePollOverlapSeconds)
  COSELL_PC_RECONCILE_SCHEDULE: partnerCenterReconcileSchedule
  COSELL_DRY_RUN: dryRun ? 'true' : 'false'
  COSELL_PUBLIC_URL: publicBaseUrl
  COSELL_WEBHOOK_FUNCTION_KEY: keyVaultReference(keyVault.outputs.uri, secretNames.webhookFunctionKey)
  COSELL_WEBHOOK_FORWARD_URLS: webhookForwardUrls
  COSELL_PC_RATE_LIMIT: partnerCenterRateLimit
  COSELL_SF_BUDGET_SHARE: salesforceBudgetShare
  COSELL_MAX_ATTEMPTS: string(maxAttempts)
}

var allSettings = union(hostStorageSettings, planSettings, telemetrySettings, connectorStorageSettings, partnerCenterSettings, salesforceSettings, connectorSettings)

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    name: appName
    location: location
    tags: tags
    azdServiceName: 'connector'
    planType: planType
    premiumSku: premiumSku
    flexMaximumInstanceCount: flexMaximumInstanceCount
    flexInstanceMemoryMB: flexInstanceMemoryMB
    deploymentContainerUrl: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
    // Created with the host's settings only; the full set follows once the identity holds its roles.
    creationSettings: union(hostStorageSettings, planSettings)
  }
  dependsOn: [
    deploymentContainer
  ]
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: functionApp.outputs.principalId
    storageAccountName: storage.name
    keyVaultName: keyVault.outputs.name
    refreshTokenSecretName: secretNames.partnerCenterRefreshToken
    grantRefreshTokenWriteBack: !empty(partnerCenterRefreshToken) || refreshTokenSecretExists
    secretsOperatorPrincipalId: secretsOperatorPrincipalId
  }
}

module appSettings 'modules/appsettings.bicep' = {
  name: 'appsettings'
  params: {
    appName: functionApp.outputs.name
    settings: allSettings
  }
  dependsOn: [
    roles
    queues
  ]
}

output functionAppName string = functionApp.outputs.name
output functionAppUrl string = 'https://${functionApp.outputs.defaultHostName}'
output webhookUrl string = '${publicBaseUrl}/api/partnercenter/events'
output storageAccountName string = storage.name
output keyVaultName string = keyVault.outputs.name
output keyVaultUri string = keyVault.outputs.uri
output appInsightsName string = monitoring.outputs.appInsightsName
output principalId string = functionApp.outputs.principalId
