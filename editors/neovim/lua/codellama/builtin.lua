-- Ghost text through Neovim 0.12's vim.lsp.inline_completion: Neovim requests (debounced), draws and
-- keeps the suggestion while the user types through it; this module adds what it lacks: reading the
-- shown suggestion, accepting a word or a line, dismissing, and an explicit trigger.
local text = require('codellama.text')

local api = vim.api
local M = {}

local function builtin_ns()
  return api.nvim_get_namespaces()['nvim.lsp.inline_completion']
end

--- The suggestion as drawn by Neovim: the inline part after the cursor plus the virtual lines.
---@param bufnr integer
---@return string?
function M.suggestion(bufnr)
  local ns = builtin_ns()
  if not ns or not api.nvim_buf_is_valid(bufnr) then
    return nil
  end
  local marks = api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })
  local mark = marks[1]
  if not mark then
    return nil
  end
  local details = mark[4]
  local first = {}
  for _, chunk in ipairs(details.virt_text or {}) do
    if chunk[2] ~= 'ComplHintMore' then -- the " (1/3)" counter
      table.insert(first, chunk[1])
    end
  end
  local lines = { table.concat(first) }
  for _, vline in ipairs(details.virt_lines or {}) do
    local parts = {}
    for _, chunk in ipairs(vline) do
      table.insert(parts, chunk[1])
    end
    table.insert(lines, table.concat(parts))
  end
  local s = table.concat(lines, '\n')
  return s ~= '' and s or nil
end

local function cursor(bufnr)
  local win = vim.fn.bufwinid(bufnr)
  if win == -1 then
    return nil
  end
  local pos = api.nvim_win_get_cursor(win)
  return pos[1] - 1, pos[2], win
end

--- Inserts (part of) a vim.lsp.inline_completion item at the cursor. The item's range was computed
--- when it was requested; characters typed since then (typing through) are not inserted twice, and the
--- text right of the cursor that the item replaces (closing brackets) is replaced only on a full accept.
---@param bufnr integer
---@param item vim.lsp.inline_completion.Item
---@param part? "word"|"line"
function M.apply(bufnr, item, part)
  local insert = item.insert_text
  if type(insert) == 'table' then
    insert = tostring(vim.lsp._snippet_grammar.parse(insert.value))
  end
  local row, col, win = cursor(bufnr)
  if not row or type(insert) ~= 'string' then
    return
  end
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  local start_row, start_col, end_col = row, col, col
  local range = item.range
  if range and range.start then
    start_row, start_col = range.start.row, range.start.col
    end_col = (range.end_ and range.end_.row == start_row) and range.end_.col or start_col
  end
  local rest, replace = insert, 0
  if start_row == row and start_col <= col then
    local typed = line:sub(start_col + 1, col)
    rest = text.advance(insert, typed) or insert
    -- The replaced text moved right by what was typed.
    replace = math.max(0, end_col - start_col)
  end
  local chunk = rest
  if part == 'word' then
    chunk = text.next_word(rest)
  elseif part == 'line' then
    chunk = text.next_line(rest)
  end
  if chunk == '' then
    chunk = rest
  end
  if chunk ~= rest then
    replace = 0
  end
  api.nvim_buf_set_text(bufnr, row, col, row, math.min(col + replace, #line), text.lines(chunk))
  local new_row, new_col = text.end_position(row, col, chunk)
  api.nvim_win_set_cursor(win, { new_row + 1, new_col })
  if chunk == rest and item.command then -- LSP 3.18: run on accept (the server counts it as accepted)
    require('codellama.server').execute(bufnr, item.command, item.client_id)
  end
end

--- Accepts the shown suggestion (or its next word/line). Neovim applies it on the next event-loop
--- tick, so this works from <expr> mappings too.
---@return boolean accepted
function M.accept(bufnr, part)
  return vim.lsp.inline_completion.get({
    bufnr = bufnr,
    on_accept = function(item)
      M.apply(bufnr, item, part)
    end,
  })
end

--- Hides the suggestion until the next keystroke (re-creating Neovim's per-buffer state is the only
--- public way to drop it without leaving Insert mode).
function M.dismiss(bufnr)
  local filter = { bufnr = bufnr }
  if vim.lsp.inline_completion.is_enabled(filter) then
    vim.lsp.inline_completion.enable(false, filter)
    vim.lsp.inline_completion.enable(true, filter)
  end
end

function M.cycle(bufnr, delta)
  vim.lsp.inline_completion.select({ bufnr = bufnr, count = delta })
end

--- Asks for a suggestion now (LSP trigger kind Invoked).
function M.trigger(bufnr)
  -- Neovim keeps its per-buffer completor private; use it when it is there, as :help documents.
  local ok, capability = pcall(require, 'vim.lsp._capability')
  local completor = ok and capability.all and capability.all.inline_completion and capability.all.inline_completion.active[bufnr]
  if completor and completor.request then
    completor:request(1)
  end
end

function M.attach(bufnr)
  vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
end

function M.detach(bufnr)
  if api.nvim_buf_is_valid(bufnr) then
    vim.lsp.inline_completion.enable(false, { bufnr = bufnr })
  end
end

return M
