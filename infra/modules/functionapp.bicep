// The hosting plan and the Function App: Python 3.11 on Linux, system-assigned identity, HTTPS only,
// TLS 1.2, no FTP, no basic-auth publishing (deployments sign in with Microsoft Entra).

param name string
param location string
param tags object

@description('azure.yaml\'s service name: `azd deploy` finds the app it publishes to by the tag azd-service-name (on the site only: one resource may carry it).')
param azdServiceName string

@allowed([
  'FlexConsumption'
  'Premium'
  'Consumption'
])
param planType string
param premiumSku string
param flexMaximumInstanceCount int
param flexInstanceMemoryMB int

@description('Flex Consumption: the blob container the deployment package is uploaded to.')
param deploymentContainerUrl string

@description('The host\'s settings, present from creation (Premium creates its content share from them). May hold a storage key, hence secure.')
@secure()
param creationSettings object

var isFlex = planType == 'FlexConsumption'
var isPremium = planType == 'Premium'

var planSku = isFlex ? {
  name: 'FC1'
  tier: 'FlexConsumption'
} : isPremium ? {
  name: premiumSku
  tier: 'ElasticPremium'
} : {
  name: 'Y1'
  tier: 'Dynamic'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: isPremium ? 'elastic' : 'functionapp'
  sku: planSku
  properties: {
    // Linux.
    reserved: true
    maximumElasticWorkerCount: isPremium ? 20 : null
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': azdServiceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      // Flex Consumption takes the runtime from functionAppConfig and refuses linuxFxVersion.
      linuxFxVersion: isFlex ? null : 'Python|3.11'
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(creationSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: isFlex ? {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: flexMaximumInstanceCount
        instanceMemoryMB: flexInstanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    } : null
  }
}

// Basic (user name + password) publishing off for both FTP and the SCM site.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
output principalId string = site.identity.principalId
