// The vault for the Partner Center and Salesforce secrets. RBAC only (no access policies): the Function
// App's identity gets "Key Vault Secrets User" on the vault and "Key Vault Secrets Officer" on the one
// secret it rewrites (modules/roles.bicep).
//
// A secret is written only when its value is given. The connector rotates the Partner Center refresh
// token and writes each new one here; a later deployment that leaves the value out never puts an old,
// revoked token back.

param name string
param location string
param tags object
param purgeProtection bool

param partnerCenterClientSecretName string
@secure()
param partnerCenterClientSecret string

param partnerCenterRefreshTokenName string
@secure()
param partnerCenterRefreshToken string

param salesforcePrivateKeyName string
@secure()
param salesforcePrivateKey string

param salesforceClientSecretName string
@secure()
param salesforceClientSecret string

param salesforcePasswordName string
@secure()
param salesforcePassword string

param salesforceSecurityTokenName string
@secure()
param salesforceSecurityToken string

param webhookFunctionKeyName string
@secure()
param webhookFunctionKey string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    // Purge protection cannot be set to false, only left out.
    enablePurgeProtection: purgeProtection ? true : null
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource partnerCenterClientSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(partnerCenterClientSecret)) {
  parent: vault
  name: partnerCenterClientSecretName
  properties: {
    value: partnerCenterClientSecret
  }
}

resource partnerCenterRefreshTokenValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(partnerCenterRefreshToken)) {
  parent: vault
  name: partnerCenterRefreshTokenName
  properties: {
    value: partnerCenterRefreshToken
  }
}

resource salesforcePrivateKeyValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(salesforcePrivateKey)) {
  parent: vault
  name: salesforcePrivateKeyName
  properties: {
    value: salesforcePrivateKey
    contentType: 'application/x-pem-file'
  }
}

resource salesforceClientSecretValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(salesforceClientSecret)) {
  parent: vault
  name: salesforceClientSecretName
  properties: {
    value: salesforceClientSecret
  }
}

resource salesforcePasswordValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(salesforcePassword)) {
  parent: vault
  name: salesforcePasswordName
  properties: {
    value: salesforcePassword
  }
}

resource salesforceSecurityTokenValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(salesforceSecurityToken)) {
  parent: vault
  name: salesforceSecurityTokenName
  properties: {
    value: salesforceSecurityToken
  }
}

resource webhookFunctionKeyValue 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(webhookFunctionKey)) {
  parent: vault
  name: webhookFunctionKeyName
  properties: {
    value: webhookFunctionKey
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
