-- Orthanc routing rule: every stable study's MR series go to glioma-node.
-- glioma-node's own results (SEG, SR, OT) are not MR, so they are not sent back to it.
function OnStableStudy(studyId, tags, metadata)
  local series = ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))
  for _, s in pairs(series) do
    if s['MainDicomTags']['Modality'] == 'MR' then
      RestApiPost('/modalities/glioma-node/store', s['ID'])
    end
  end
end
