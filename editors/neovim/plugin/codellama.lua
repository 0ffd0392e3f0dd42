-- Commands only; nothing starts until require("codellama").setup() is called.
if vim.g.loaded_codellama then
  return
end
vim.g.loaded_codellama = true

vim.api.nvim_create_user_command('CodellamaToggle', function()
  require('codellama').enable()
end, { desc = 'Turn codellama suggestions on or off' })

vim.api.nvim_create_user_command('CodellamaRestart', function()
  require('codellama').restart()
end, { desc = 'Restart the codellama language server' })

vim.api.nvim_create_user_command('CodellamaStatus', function()
  local status = require('codellama').status()
  vim.notify(status ~= '' and status or 'codellama: not running in this buffer')
end, { desc = 'Show the codellama model, device and last latency' })
