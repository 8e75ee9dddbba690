// The least the Function App's identity needs:
//   storage account   Storage Blob Data Owner       host storage (keys, timer locks) and, on Flex, the deployment package
//                     Storage Queue Data Contributor the connector's queues and the queue triggers (incl. poison queues)
//                     Storage Table Data Contributor the connector's tables (links, sync state, cursors, ...)
//   key vault         Key Vault Secrets User         read the secrets the app settings reference
//   one secret        Key Vault Secrets Officer      write back the rotated Partner Center refresh token, nothing else
// and, when asked, Key Vault Secrets Officer on the vault for the person or group who sets secrets by hand.

param principalId string
param storageAccountName string
param keyVaultName string
param refreshTokenSecretName string

@description('Grant the write-back role; the refresh-token secret must exist when this deploys.')
param grantRefreshTokenWriteBack bool

@description('Object id of a person or group allowed to set secrets by hand; empty for none.')
param secretsOperatorPrincipalId string

var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'

var storageRoles = [
  storageBlobDataOwner
  storageQueueDataContributor
  storageTableDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource refreshTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' existing = {
  parent: vault
  name: refreshTokenSecretName
}

resource storageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in storageRoles: {
  name: guid(storage.id, principalId, role)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

resource secretsRead 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource refreshTokenWriteBack 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantRefreshTokenWriteBack) {
  name: guid(refreshTokenSecret.id, principalId, keyVaultSecretsOfficer)
  scope: refreshTokenSecret
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource operatorSecretsAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(secretsOperatorPrincipalId)) {
  name: guid(vault.id, secretsOperatorPrincipalId, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: secretsOperatorPrincipalId
  }
}
